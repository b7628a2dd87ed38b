-- staged_counts for warehouse/labels.merge_staged_histograms, for the touched images that have a crop:
-- - rebuilt (temp table sac_touched): the vote histogram (bins 1..10) from all the image's stored ratings;
-- - updated (the other images with queued votes, temp table sac_added): their stored counts plus
--   the queued votes' (migrations/022_sac_pending_votes.sql).
CREATE OR REPLACE TEMP TABLE staged_counts AS
WITH rebuilt AS (
    SELECT r.iid, r.rating
    FROM sac_ratings r
    -- narrow the (small) touched set to cropped images first: sac_ratings itself may hold 10M rows
    WHERE r.iid IN (
        SELECT t.iid FROM sac_touched t
        WHERE CAST(t.iid AS VARCHAR) IN (SELECT image_id FROM images WHERE dataset = 'sac')
    )
), queued AS (
    SELECT v.iid, v.rating FROM sac_pending_votes v WHERE v.iid IN (SELECT iid FROM sac_added)
), counted AS (
    SELECT
        iid,
        added,
        [count(*) FILTER (WHERE rating = 1), count(*) FILTER (WHERE rating = 2),
         count(*) FILTER (WHERE rating = 3), count(*) FILTER (WHERE rating = 4),
         count(*) FILTER (WHERE rating = 5), count(*) FILTER (WHERE rating = 6),
         count(*) FILTER (WHERE rating = 7), count(*) FILTER (WHERE rating = 8),
         count(*) FILTER (WHERE rating = 9), count(*) FILTER (WHERE rating = 10)]::INTEGER[10] AS counts
    FROM (SELECT *, false AS added FROM rebuilt UNION ALL SELECT *, true AS added FROM queued)
    GROUP BY iid, added
)
SELECT CAST(c.iid AS VARCHAR) AS image_id, c.counts FROM counted c WHERE NOT c.added
UNION ALL
SELECT a.image_id, list_transform(a.counts, lambda n, i: n + c.counts[i])::INTEGER[10]
FROM counted c
JOIN sac_added a ON a.iid = c.iid
WHERE c.added
