-- Stage the attached snapshot `sac_src` (typed, or every column as text when a value does not fit its
-- column's declared type: see warehouse/sac.with_snapshot). Casts are TRY_CASTs so both work.
-- sac_snap_images: one row per image of the snapshot with its generation and file name.
CREATE OR REPLACE TEMP TABLE sac_snap_images AS
SELECT TRY_CAST(i.id AS BIGINT) AS iid, CAST(i.id AS VARCHAR) AS raw_id, TRY_CAST(i.gid AS BIGINT) AS gid, p.path
FROM sac_src.images i
-- images.id and paths.iid are INTEGER PRIMARY KEYs in SAC's schema: at most one path per image.
LEFT JOIN sac_src.paths p ON TRY_CAST(p.iid AS BIGINT) = TRY_CAST(i.id AS BIGINT);

-- sac_snap_ratings: every ratings row, parsed and classified. A view, not a table: each use rescans the
-- SQLite file (fast), which keeps 10M-row snapshots out of memory.
CREATE OR REPLACE TEMP VIEW sac_snap_ratings AS
SELECT
    r.row_no, r.raw_sid, r.raw_iid, r.raw_rating, r.sid, r.iid, r.value,
    CASE
        WHEN r.is_null THEN 'null'
        WHEN r.sid IS NULL OR r.iid IS NULL THEN 'bad id'
        WHEN r.value IS NULL THEN 'not a number'
        WHEN r.value NOT BETWEEN 1 AND 10 OR r.value <> floor(r.value) THEN 'out of range'
        WHEN i.iid IS NULL THEN 'unknown image'
        ELSE 'ok'
    END AS status
FROM (
    SELECT
        rowid AS row_no,
        CAST(sid AS VARCHAR) AS raw_sid,
        CAST(iid AS VARCHAR) AS raw_iid,
        CAST(rating AS VARCHAR) AS raw_rating,
        rating IS NULL AS is_null,
        TRY_CAST(sid AS BIGINT) AS sid,
        TRY_CAST(iid AS BIGINT) AS iid,
        TRY_CAST(rating AS DOUBLE) AS value
    FROM sac_src.ratings
) r
LEFT JOIN (SELECT DISTINCT iid FROM sac_snap_images WHERE iid IS NOT NULL) i ON i.iid = r.iid;
