-- Ratings accepted by ingest $1 are no longer rejects. Starts from the (few) stored rating rejects, so a
-- full build does not spell out 10M 'rating:<sid>:<iid>' strings to compare.
DELETE FROM rejects
WHERE dataset = 'sac' AND stage = 'ratings' AND item_id IN (
    SELECT 'rating:' || r.sid || ':' || r.iid
    FROM sac_ratings r
    WHERE r.ingest_id = $1 AND r.iid IN (
        SELECT TRY_CAST(split_part(x.item_id, ':', 3) AS BIGINT) FROM rejects x
        WHERE x.dataset = 'sac' AND x.stage = 'ratings'
    )
)
