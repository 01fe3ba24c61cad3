-- A claim takes each endpoint's oldest due messages (webhook-ledger's `claim`): this
-- index finds the endpoints with pending messages one probe each and their due messages
-- in order, instead of ranking every due row of every endpoint at each claim.
CREATE INDEX webhook_messages_pending_per_endpoint
    ON webhook_messages (endpoint_id, next_attempt_at) WHERE status = 'pending';
