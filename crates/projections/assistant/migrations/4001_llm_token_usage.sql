-- LLM tokens spent per tenant and UTC day (crate assistant, module budget): one budget
-- for every replica of the assistant.
CREATE TABLE llm_token_usage (
    tenant_id text   NOT NULL,
    day       date   NOT NULL,
    tokens    bigint NOT NULL DEFAULT 0 CHECK (tokens >= 0),
    PRIMARY KEY (tenant_id, day)
);
