-- Webhook delivery (crates/projections/webhook-delivery). Not a generation's tables: the
-- ledger of what was sent survives rebuilds, so nothing is ever sent twice because a
-- projection was rebuilt.

-- One message per (event, subscribed endpoint), created by the fan-out projection in the
-- transaction that records its progress; sent by the dispatcher on its schedule.
CREATE TABLE webhook_messages (
    message_id      text        PRIMARY KEY,  -- the webhook-id: msg_<32 hex>
    tenant_id       text        NOT NULL,
    endpoint_id     uuid        NOT NULL,
    event_id        uuid        NOT NULL,
    event_type      text        NOT NULL,     -- the webhook type, message.sent
    body            text        NOT NULL,     -- the exact bytes signed and sent
    created_at      timestamptz NOT NULL DEFAULT now(),
    -- pending: waits for next_attempt_at; paused: its endpoint is disabled; delivered;
    -- dead: the schedule ran out; dropped: its endpoint was deleted.
    status          text        NOT NULL DEFAULT 'pending'
                    CHECK (status IN ('pending', 'paused', 'delivered', 'dead', 'dropped')),
    attempts        int         NOT NULL DEFAULT 0,  -- in the current schedule
    total_attempts  int         NOT NULL DEFAULT 0,
    next_attempt_at timestamptz,
    delivered_at    timestamptz,
    last_error      text
);
CREATE INDEX webhook_messages_due ON webhook_messages (next_attempt_at) WHERE status = 'pending';
CREATE INDEX webhook_messages_endpoint ON webhook_messages (endpoint_id, created_at);

-- Every attempt: when, where, what came back.
CREATE TABLE webhook_attempts (
    attempt_id    bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    message_id    text        NOT NULL REFERENCES webhook_messages,
    endpoint_id   uuid        NOT NULL,
    tenant_id     text        NOT NULL,
    attempted_at  timestamptz NOT NULL,
    url           text        NOT NULL,
    status_code   int,
    latency_ms    int         NOT NULL,
    error         text,
    response      text,       -- the first bytes of the answer
    succeeded     boolean     NOT NULL
);
CREATE INDEX webhook_attempts_endpoint ON webhook_attempts (endpoint_id, attempted_at DESC);
CREATE INDEX webhook_attempts_message ON webhook_attempts (message_id, attempted_at);

-- Since when an endpoint fails without a success in between (auto-disable).
CREATE TABLE webhook_endpoint_health (
    endpoint_id     uuid        PRIMARY KEY,
    failing_since   timestamptz,
    last_success_at timestamptz
);
