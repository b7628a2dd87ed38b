-- sac_snap_images (as sac_stage.sql makes it) for the images past rowid $1 only: the snapshot's rows up to
-- there are an ingested snapshot's (warehouse/sac.resume_images_rowid), so only these can be new.
CREATE OR REPLACE TEMP TABLE sac_snap_images AS
SELECT
    TRY_CAST(id AS BIGINT) AS iid,
    CASE WHEN TRY_CAST(id AS BIGINT) IS NULL THEN CAST(id AS VARCHAR) END AS bad_id
FROM sqlite_query('sac_src', 'SELECT id FROM images WHERE rowid > ?', params := {'after': $1::BIGINT})
