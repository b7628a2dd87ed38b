-- Stage the image ids of the attached snapshot `sac_src` (typed, or every column as text when a value does
-- not fit its column's declared type: see warehouse/sac.with_snapshot). Casts are TRY_CASTs so both work.
-- sac_snap_images: one row per image of the snapshot. Only the id is read here: the ratings' image check
-- needs no more, and generation and path are read for the crop candidates alone (sac_crop_candidates.sql),
-- which an incremental snapshot rarely has (reading all three columns and paths took 0.2 s for 1M images,
-- the id alone 0.06 s).
-- Read from the temp view sac_snap_images_src(id): the whole images table, or only the rows past an
-- ingested snapshot's images boundary (see warehouse/sac.create_snapshot_views).
CREATE OR REPLACE TEMP TABLE sac_snap_images AS
SELECT
    TRY_CAST(i.id AS BIGINT) AS iid,
    CASE WHEN TRY_CAST(i.id AS BIGINT) IS NULL THEN CAST(i.id AS VARCHAR) END AS bad_id  -- not an integer
FROM sac_snap_images_src i;
