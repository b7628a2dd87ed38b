-- sac_snap_ratings: the ratings rows to merge, parsed and classified, read from the temp view
-- sac_snap_ratings_src(row_no, sid, iid, rating) ONCE (the whole SQLite table, or only its new tail:
-- see warehouse/sac.stage_snapshot); class counts, inserts and rejects all read this table.
-- Kept narrow (about 26 bytes a row): the raw text is kept only for the rows that become rejects.
CREATE OR REPLACE TEMP TABLE sac_snap_ratings AS
SELECT
    row_no, sid, iid,
    CASE WHEN status = 'ok' THEN value::TINYINT END AS rating,
    status,
    CASE WHEN status NOT IN ('ok', 'null') THEN
        [CAST(src_sid AS VARCHAR), CAST(src_iid AS VARCHAR), CAST(src_rating AS VARCHAR)]
    END AS raw  -- [sid, iid, rating] as text
FROM (
    SELECT
        r.*,
        CAST(CASE
            WHEN r.src_rating IS NULL THEN 'null'
            WHEN r.sid IS NULL OR r.iid IS NULL THEN 'bad id'
            WHEN r.value IS NULL THEN 'not a number'
            WHEN r.value NOT BETWEEN 1 AND 10 OR r.value <> floor(r.value) THEN 'out of range'
            WHEN i.iid IS NULL THEN 'unknown image'
            ELSE 'ok'
        END AS ENUM ('ok', 'null', 'bad id', 'not a number', 'out of range', 'unknown image')) AS status
    FROM (
        SELECT
            CAST(row_no AS BIGINT) AS row_no,
            sid AS src_sid, iid AS src_iid, rating AS src_rating,
            TRY_CAST(sid AS BIGINT) AS sid,
            TRY_CAST(iid AS BIGINT) AS iid,
            TRY_CAST(rating AS DOUBLE) AS value
        FROM sac_snap_ratings_src
    ) r
    -- the snapshot's image ids that the staged rows can refer to (temp view, see warehouse/sac.stage_snapshot)
    LEFT JOIN sac_snap_rated_images i ON i.iid = r.iid
);
