-- AI Gateways made through the gateways API (server/serving/gateways.py); declared ones are not stored.
CREATE TABLE wai_gateways (
    id TEXT PRIMARY KEY,
    internal_id TEXT NOT NULL,                 -- a uuid the server made
    created_at DOUBLE PRECISION NOT NULL,      -- wall-clock seconds
    modified_at DOUBLE PRECISION NOT NULL,
    settings TEXT NOT NULL                     -- the gateway's settings by Cloudflare's names, JSON
);
CREATE INDEX wai_gateways_by_creation ON wai_gateways (created_at, id);
