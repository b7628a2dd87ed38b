-- SAC ratings merged across snapshots of the public SQLite file (assets/sac.py, warehouse/sac.py).

-- Every accepted rating, one per (rater, image): the identity successive snapshots are merged on.
-- A (sid, iid) once stored is never overwritten, so ingesting snapshots 1 then 2 equals ingesting 2 alone.
-- ingest_id marks the call that inserted the row, so that call (and only it) marks histograms stale.
-- No PRIMARY KEY on purpose: maintaining the index made a 10M-rating build ~5x slower. (sid, iid) stays
-- unique by construction: sac_insert_ratings.sql inserts one row per pair, only pairs not stored yet, in
-- one statement, and DuckDB admits one writer at a time.
CREATE TABLE IF NOT EXISTS sac_ratings (
    sid       BIGINT   NOT NULL,
    iid       BIGINT   NOT NULL,
    rating    TINYINT  NOT NULL CHECK (rating BETWEEN 1 AND 10),
    snapshot  VARCHAR  NOT NULL,
    ingest_id VARCHAR  NOT NULL
);

-- Images whose ratings changed since their histogram was built. Written in the same transaction as
-- the ratings and emptied in the one that rebuilds the histograms: a kill between the two loses nothing.
CREATE TABLE IF NOT EXISTS sac_pending_histograms (
    iid BIGINT PRIMARY KEY
);

-- One row per snapshot file ingested (the dynamic partition key, or the drop's own file).
CREATE TABLE IF NOT EXISTS sac_snapshots (
    snapshot      VARCHAR PRIMARY KEY,
    file          VARCHAR NOT NULL,
    sha256        VARCHAR NOT NULL,
    ratings_read  BIGINT  NOT NULL,
    ratings_new   BIGINT  NOT NULL,
    images_read   BIGINT  NOT NULL,
    ingested_at   TIMESTAMP NOT NULL DEFAULT current_timestamp
);
