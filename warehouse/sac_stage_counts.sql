-- staged_counts for warehouse/labels.merge_staged_histograms: the vote histogram (bins 1..10) of every
-- touched image (temp table sac_touched) that has a crop, from all its accepted ratings.
CREATE OR REPLACE TEMP TABLE staged_counts AS
SELECT
    CAST(r.iid AS VARCHAR) AS image_id,
    [count(*) FILTER (WHERE r.rating = 1), count(*) FILTER (WHERE r.rating = 2),
     count(*) FILTER (WHERE r.rating = 3), count(*) FILTER (WHERE r.rating = 4),
     count(*) FILTER (WHERE r.rating = 5), count(*) FILTER (WHERE r.rating = 6),
     count(*) FILTER (WHERE r.rating = 7), count(*) FILTER (WHERE r.rating = 8),
     count(*) FILTER (WHERE r.rating = 9), count(*) FILTER (WHERE r.rating = 10)]::INTEGER[10] AS counts
FROM sac_ratings r
-- narrow the (small) touched set to cropped images first: sac_ratings itself may hold 10M rows
WHERE r.iid IN (
    SELECT t.iid FROM sac_touched t
    WHERE CAST(t.iid AS VARCHAR) IN (SELECT image_id FROM images WHERE dataset = 'sac')
)
GROUP BY r.iid
