-- Endpoint views show how many of an endpoint's messages are dead now (ledger::dead_messages):
-- a count over the few dead rows, not a scan of every message the endpoint ever had.
CREATE INDEX webhook_messages_dead ON webhook_messages (endpoint_id) WHERE status = 'dead';
