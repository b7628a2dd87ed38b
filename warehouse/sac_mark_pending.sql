-- The images the staged votes rate (a superset of those the ingest just inserted ratings for), and whether
-- each has a histogram. New votes are then queued to be added to it (sac_pending_votes) or, without one,
-- the image is queued to be counted from all its ratings (sac_pending_histograms): see
-- warehouse/sac.insert_new_ratings. The lookup starts from these images, a small set in a backfill,
-- instead of casting every stored image_id.
CREATE OR REPLACE TEMP TABLE sac_new_vote_images AS
WITH ids AS (SELECT DISTINCT iid, CAST(iid AS VARCHAR) AS image_id FROM sac_snap_ratings WHERE status = 'ok')
SELECT ids.iid, h.image_id IS NOT NULL AS has_histogram
FROM ids
LEFT JOIN (
    SELECT image_id FROM histograms WHERE dataset = 'sac' AND image_id IN (SELECT image_id FROM ids)
) h ON h.image_id = ids.image_id
