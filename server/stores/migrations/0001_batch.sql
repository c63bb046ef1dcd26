-- The async batch API's jobs and items, as server/batch/store.py keeps them in SQLite, plus the lease
-- a replica holds on each item it runs (server/stores/batch.py).
CREATE TABLE wai_batch_jobs (
    id TEXT PRIMARY KEY,
    model TEXT NOT NULL,                       -- as the client named it
    status TEXT NOT NULL DEFAULT 'queued' CHECK (status IN ('queued', 'running', 'done')),
    items INTEGER NOT NULL,
    done_items INTEGER NOT NULL DEFAULT 0,
    created DOUBLE PRECISION NOT NULL,         -- wall-clock seconds
    finished DOUBLE PRECISION                  -- when its last item was done; results expire from then
);
CREATE TABLE wai_batch_items (
    seq BIGSERIAL PRIMARY KEY,                 -- submission order: jobs first come, first served
    job TEXT NOT NULL REFERENCES wai_batch_jobs (id) ON DELETE CASCADE,
    idx INTEGER NOT NULL,
    input TEXT NOT NULL,                       -- the request as JSON
    external_reference TEXT,                   -- as JSON
    state TEXT NOT NULL DEFAULT 'queued' CHECK (state IN ('queued', 'running', 'done')),
    attempts INTEGER NOT NULL DEFAULT 0,
    orphaned INTEGER NOT NULL DEFAULT 0,       -- times a replica stopped without giving it back (its lease ran out)
    completions INTEGER NOT NULL DEFAULT 0,
    response TEXT,                             -- the item's answer as JSON, once done
    owner TEXT,                                -- the replica running it
    lease_until TIMESTAMPTZ,                   -- the database's clock: the owner's claim ends then unless renewed
    UNIQUE (job, idx)
);
CREATE INDEX wai_batch_items_queued ON wai_batch_items (seq) WHERE state = 'queued';
CREATE INDEX wai_batch_items_leases ON wai_batch_items (lease_until) WHERE state = 'running';
CREATE INDEX wai_batch_jobs_by_status ON wai_batch_jobs (status, finished);
