-- The AI Gateway's logs (server/serving/gateway_logs.py): one per request through a gateway.
CREATE TABLE wai_gateway_logs (
    gateway_id TEXT NOT NULL,
    id TEXT NOT NULL,                          -- ULID-shaped: sorts by time
    created_at DOUBLE PRECISION NOT NULL,      -- wall-clock seconds
    provider TEXT NOT NULL,
    model TEXT NOT NULL,
    model_type TEXT,
    path TEXT NOT NULL,
    request_type TEXT NOT NULL,
    status_code INTEGER NOT NULL,
    success BOOLEAN NOT NULL,
    cached BOOLEAN NOT NULL,
    duration_ms INTEGER NOT NULL,
    ttft_ms INTEGER,
    error_code INTEGER,
    finetune TEXT,
    tokens_in INTEGER,
    tokens_out INTEGER,
    tokens_cached INTEGER,
    cost DOUBLE PRECISION,
    custom_cost BOOLEAN NOT NULL,
    metadata TEXT NOT NULL,                    -- the request's cf-aig-metadata, JSON
    extra TEXT NOT NULL,                       -- the metadata PATCH set, JSON
    event_id TEXT,
    step INTEGER NOT NULL,
    request_content_type TEXT NOT NULL,
    response_content_type TEXT NOT NULL,
    request_head TEXT NOT NULL,
    response_head TEXT NOT NULL,
    request_size BIGINT NOT NULL,
    response_size BIGINT NOT NULL,
    feedback DOUBLE PRECISION,
    score DOUBLE PRECISION,
    request_body BYTEA,                        -- NULL: logged without payload
    response_body BYTEA,
    PRIMARY KEY (gateway_id, id)
);
CREATE INDEX wai_gateway_logs_by_age ON wai_gateway_logs (gateway_id, created_at);
CREATE INDEX wai_gateway_logs_expiry ON wai_gateway_logs (created_at);

-- Each log's metadata entries (the request's and PATCH's, as text), for the metadata filters and search.
CREATE TABLE wai_gateway_log_metadata (
    gateway_id TEXT NOT NULL,
    log_id TEXT NOT NULL,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (gateway_id, log_id, key),
    FOREIGN KEY (gateway_id, log_id) REFERENCES wai_gateway_logs (gateway_id, id) ON DELETE CASCADE
);
