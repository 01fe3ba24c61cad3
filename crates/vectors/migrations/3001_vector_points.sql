-- The embedded vector store (crate vectors, module pg). An index belongs to one embedding
-- model and one generation of the embeddings projection.
CREATE TABLE vector_indexes (
    name       text        PRIMARY KEY,
    dimension  integer     NOT NULL CHECK (dimension > 0),
    created_at timestamptz NOT NULL DEFAULT now()
);

-- One row per point. A deleted point stays as a tombstone (vector NULL) so that readers
-- keeping a copy in memory learn of the deletion. `tx` is the writing transaction: a
-- reader that has seen everything below some transaction horizon reads only rows at or
-- above it (see pg.rs).
CREATE TABLE vector_points (
    index_name      text    NOT NULL REFERENCES vector_indexes (name) ON DELETE CASCADE,
    id              uuid    NOT NULL,
    tenant_id       text    NOT NULL,
    source_kind     text    NOT NULL CHECK (source_kind IN ('message', 'document', 'knowledge')),
    source_id       uuid    NOT NULL,
    conversation_id uuid,
    started_by      text,
    title           text    NOT NULL,
    event_id        uuid    NOT NULL,
    position        bigint  NOT NULL,
    chunk           integer NOT NULL,
    text            text    NOT NULL,
    vector          bytea,
    tx              xid8    NOT NULL DEFAULT pg_current_xact_id(),
    PRIMARY KEY (index_name, id)
);
CREATE INDEX vector_points_changes ON vector_points (index_name, tenant_id, tx);
CREATE INDEX vector_points_sources ON vector_points (index_name, tenant_id, source_id);
CREATE INDEX vector_points_conversations ON vector_points (index_name, tenant_id, conversation_id);
