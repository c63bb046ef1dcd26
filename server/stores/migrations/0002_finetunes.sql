-- The fine-tune registry and each fine-tune's two files (server/stores/finetunes.py). The files are
-- kept in the database, in chunks, so that every replica reaches them with no shared volume.
CREATE TABLE wai_finetunes (
    id TEXT PRIMARY KEY,                       -- a uuid the server made
    name TEXT NOT NULL UNIQUE,
    model TEXT NOT NULL,                       -- the base model's configured name
    description TEXT NOT NULL DEFAULT '',
    public BOOLEAN NOT NULL DEFAULT FALSE,
    created_at TEXT NOT NULL,                  -- as the API shows it
    modified_at TEXT NOT NULL,
    engine_id BIGINT                           -- new with every stored file: the engine loads new files afresh
);
CREATE SEQUENCE wai_finetune_engine_ids;
CREATE TABLE wai_finetune_files (
    finetune TEXT NOT NULL REFERENCES wai_finetunes (id) ON DELETE CASCADE,
    file_name TEXT NOT NULL,
    chunk INTEGER NOT NULL,
    data BYTEA NOT NULL,
    PRIMARY KEY (finetune, file_name, chunk)
);
