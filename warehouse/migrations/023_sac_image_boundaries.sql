-- Where each ingested SAC snapshot's images table ended, written only once every image up to there was
-- cropped or rejected (with the histograms, step 3 of ingest/sac.py). A later snapshot whose ratings are
-- read from an earlier boundary on (sac_rating_boundaries), and whose images rows 1..max_rowid still number
-- n_rows and match the fingerprint, stages only the images past max_rowid (warehouse/sac.resume_images_rowid).
-- fingerprint: sha256 of the rows (rowid, id, gid) at 17 rowids spread over 1..max_rowid.
CREATE TABLE IF NOT EXISTS sac_image_boundaries (
    snapshot    VARCHAR PRIMARY KEY,
    max_rowid   BIGINT  NOT NULL,
    n_rows      BIGINT  NOT NULL,
    fingerprint VARCHAR NOT NULL
);
