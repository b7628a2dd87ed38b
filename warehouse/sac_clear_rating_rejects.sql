-- Ratings accepted by ingest $1 are no longer rejects.
DELETE FROM rejects
WHERE dataset = 'sac' AND stage = 'ratings' AND item_id IN (
    SELECT 'rating:' || sid || ':' || iid FROM sac_ratings WHERE ingest_id = $1
)
