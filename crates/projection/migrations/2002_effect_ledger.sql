-- What side-effect projections have done: one row per effect performed in a live or
-- re-drive pass, written in the same transaction as the projection's progress. It lives
-- outside the generation schemas, so a rebuild does not forget what the outside world
-- has already seen.
CREATE TABLE effect_ledger (
    projection     text        NOT NULL,
    effect_id      uuid        NOT NULL,
    aggregate_type text        NOT NULL,
    aggregate_id   text        NOT NULL,
    sequence       bigint      NOT NULL,
    event_id       uuid        NOT NULL,
    pass           text        NOT NULL,
    performed_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (projection, effect_id)
);
CREATE INDEX effect_ledger_event ON effect_ledger (projection, event_id);
