-- Images of the snapshot without a crop yet (new ones, and earlier rejects worth retrying); image rows
-- whose id is not an integer are among them (they become rejects). retry: not staged, an earlier image
-- reject (only when just the new images were staged); sac_crop_candidates.sql keeps those the file has.
-- $1: only the new images were staged (warehouse/sac.stage_snapshot).
CREATE OR REPLACE TEMP TABLE sac_crop_todo AS
WITH pool AS (
    SELECT iid, bad_id, false AS retry FROM sac_snap_images
    UNION ALL
    -- an image may have a reject in both stages: one candidate each
    SELECT DISTINCT TRY_CAST(item_id AS BIGINT), NULL, true FROM rejects
    WHERE $1 AND dataset = 'sac' AND stage IN ('image', 'ratings') AND TRY_CAST(item_id AS BIGINT) IS NOT NULL
      AND TRY_CAST(item_id AS BIGINT) NOT IN (SELECT iid FROM sac_snap_images WHERE iid IS NOT NULL)
)
SELECT p.iid, p.bad_id, p.retry
FROM pool p
-- Looked up from the pool's side: a backfill's pool is small, and matching against every stored image_id
-- would cost as much as a first build's.
WHERE p.iid IS NULL OR CAST(p.iid AS VARCHAR) NOT IN (
    SELECT image_id FROM images
    WHERE dataset = 'sac' AND image_id IN (SELECT CAST(iid AS VARCHAR) FROM pool WHERE iid IS NOT NULL)
)
