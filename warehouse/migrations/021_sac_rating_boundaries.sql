-- Where each ingested SAC snapshot's ratings table ended, so a later snapshot that merely appends rows
-- to the same file is read from there on (warehouse/sac.resume_rowid). SQLite appends rows with
-- rowid max+1; a rewritten file (VACUUM, deletes, a fresh export) fails the fingerprint and is read whole.
-- fingerprint: sha256 of the rows (rowid, sid, iid, rating) at 17 rowids spread over 1..max_rowid,
-- max_rowid included. Written in the same transaction as the ratings it vouches for.
CREATE TABLE IF NOT EXISTS sac_rating_boundaries (
    snapshot    VARCHAR PRIMARY KEY,
    max_rowid   BIGINT  NOT NULL,
    fingerprint VARCHAR NOT NULL
);
