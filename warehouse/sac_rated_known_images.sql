-- sac_snap_rated_images when only the new images were staged (warehouse/sac.create_snapshot_views): the
-- tail's image ids that the snapshot has, being new (sac_snap_images) or an ingested snapshot's (the file's
-- rows up to the images boundary $1 are that snapshot's), which left every image it had cropped (images) or
-- rejected (rejects with the image id as item_id). An image another file brought is not counted unless its
-- id is at or below the boundary: snapshots are trusted to be copies of one growing database. The lookups
-- start from the tail's ids, a small set, instead of casting every stored image_id.
CREATE OR REPLACE TEMP TABLE sac_snap_rated_images AS
WITH rated AS (
    SELECT DISTINCT TRY_CAST(iid AS BIGINT) AS iid, CAST(TRY_CAST(iid AS BIGINT) AS VARCHAR) AS image_id
    FROM sac_snap_ratings_tail
    WHERE TRY_CAST(iid AS BIGINT) IS NOT NULL
)
SELECT r.iid FROM rated r
WHERE r.iid IN (SELECT iid FROM sac_snap_images)
   -- at or below the boundary $1 (images.id is the rowid in SAC's schema), and accounted for
   OR r.iid <= $1 AND (
        r.image_id IN (
            SELECT image_id FROM images WHERE dataset = 'sac' AND image_id IN (SELECT image_id FROM rated)
        )
        OR r.image_id IN (SELECT item_id FROM rejects WHERE dataset = 'sac' AND stage IN ('image', 'ratings'))
   )
