-- The delivery service reads every webhook endpoint event in committed order, to know
-- which endpoints were subscribed when an event was committed. A partial index: only the
-- (few) endpoint rows are indexed, so appends of other aggregates pay nothing for it.
CREATE INDEX events_webhook_endpoint_order ON events (tx_id, global_position)
    WHERE aggregate_type = 'webhook_endpoint';
