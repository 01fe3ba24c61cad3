-- The latest snapshot of an aggregate's state, so a process that has not seen the
-- aggregate reads only the events after it. A cache of the events, never the truth: the
-- table may be emptied at any time (every load then replays the whole stream), it is not
-- part of the outbox, and a snapshot of another format than the reader's is ignored.
CREATE TABLE aggregate_snapshots (
    aggregate_type text        NOT NULL,
    aggregate_id   text        NOT NULL,
    -- How the state is written (the command side's format for the aggregate type).
    format         integer     NOT NULL,
    -- The last event applied to the state.
    sequence       bigint      NOT NULL CHECK (sequence > 0),
    state          jsonb       NOT NULL,
    taken_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (aggregate_type, aggregate_id)
);
