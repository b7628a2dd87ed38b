-- Issue 29: where each model trained (NULL for a model recorded before), and the model ledger events the data
-- host has recorded (warehouse/ledger.py): in the two-host shape the training host writes no warehouse rows.
ALTER TABLE models ADD COLUMN IF NOT EXISTS worker VARCHAR;
ALTER TABLE models ADD COLUMN IF NOT EXISTS host VARCHAR;
ALTER TABLE models ADD COLUMN IF NOT EXISTS code_location VARCHAR;
ALTER TABLE models ADD COLUMN IF NOT EXISTS device VARCHAR;
ALTER TABLE models ADD COLUMN IF NOT EXISTS device_name VARCHAR;
ALTER TABLE models ADD COLUMN IF NOT EXISTS torch_version VARCHAR;
ALTER TABLE models ADD COLUMN IF NOT EXISTS cuda_version VARCHAR;
CREATE TABLE IF NOT EXISTS ledger_events (
    seq         INTEGER PRIMARY KEY,
    host        VARCHAR,
    written_at  TIMESTAMP,
    recorded_at TIMESTAMP NOT NULL DEFAULT current_timestamp
);
