-- The Responses API's stored responses (server/serving/response_store.py).
CREATE TABLE wai_responses (
    id TEXT PRIMARY KEY,
    created DOUBLE PRECISION NOT NULL,         -- wall-clock seconds
    body TEXT NOT NULL,                        -- the response as it was answered, JSON
    conversation TEXT NOT NULL                 -- its input turns and its output, JSON
);
CREATE INDEX wai_responses_by_age ON wai_responses (created);
