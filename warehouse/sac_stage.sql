-- Stage the images of the attached snapshot `sac_src` (typed, or every column as text when a value does
-- not fit its column's declared type: see warehouse/sac.with_snapshot). Casts are TRY_CASTs so both work.
-- sac_snap_images: one row per image of the snapshot with its generation and file name.
CREATE OR REPLACE TEMP TABLE sac_snap_images AS
SELECT TRY_CAST(i.id AS BIGINT) AS iid, CAST(i.id AS VARCHAR) AS raw_id, TRY_CAST(i.gid AS BIGINT) AS gid, p.path
FROM sac_src.images i
-- images.id and paths.iid are INTEGER PRIMARY KEYs in SAC's schema: at most one path per image.
LEFT JOIN sac_src.paths p ON TRY_CAST(p.iid AS BIGINT) = TRY_CAST(i.id AS BIGINT);
