-- Stage the attached snapshot `sac_src` (read with sqlite_all_varchar: SQLite columns are dynamically
-- typed, so one text in an INTEGER column must become one reject, not a failed scan).
-- sac_snap_images: one row per image of the snapshot with its generation and file name.
CREATE OR REPLACE TEMP TABLE sac_snap_images AS
SELECT TRY_CAST(i.id AS BIGINT) AS iid, i.id AS raw_id, TRY_CAST(i.gid AS BIGINT) AS gid, p.path
FROM sac_src.images i
-- images.id and paths.iid are INTEGER PRIMARY KEYs in SAC's schema: at most one path per image.
LEFT JOIN sac_src.paths p ON p.iid = i.id;

-- sac_snap_ratings: every ratings row, parsed and classified. A view, not a table: each use rescans the
-- SQLite file (fast), which keeps 10M-row snapshots out of memory.
CREATE OR REPLACE TEMP VIEW sac_snap_ratings AS
SELECT
    r.rowid AS row_no,
    r.sid AS raw_sid,
    r.iid AS raw_iid,
    r.rating AS raw_rating,
    TRY_CAST(r.sid AS BIGINT) AS sid,
    TRY_CAST(r.iid AS BIGINT) AS iid,
    TRY_CAST(r.rating AS DOUBLE) AS value,
    CASE
        WHEN r.rating IS NULL THEN 'null'
        WHEN TRY_CAST(r.sid AS BIGINT) IS NULL OR TRY_CAST(r.iid AS BIGINT) IS NULL THEN 'bad id'
        WHEN TRY_CAST(r.rating AS DOUBLE) IS NULL THEN 'not a number'
        WHEN TRY_CAST(r.rating AS DOUBLE) NOT BETWEEN 1 AND 10
            OR TRY_CAST(r.rating AS DOUBLE) <> floor(TRY_CAST(r.rating AS DOUBLE)) THEN 'out of range'
        WHEN TRY_CAST(r.iid AS BIGINT) NOT IN (SELECT iid FROM sac_snap_images WHERE iid IS NOT NULL)
            THEN 'unknown image'
        ELSE 'ok'
    END AS status
FROM sac_src.ratings r;
