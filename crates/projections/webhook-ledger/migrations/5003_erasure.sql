-- Erasure (docs/DATA-PROTECTION.md): the conversation a message's event is about, so
-- that erasing it reaches the message's body. Messages written before this column
-- name it only in their body.
ALTER TABLE webhook_messages ADD COLUMN conversation_id uuid;
CREATE INDEX webhook_messages_conversation ON webhook_messages (tenant_id, conversation_id)
    WHERE conversation_id IS NOT NULL;
