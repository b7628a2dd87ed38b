-- Insert the staged valid ratings not seen before; within one file the first row of a (sid, iid) wins,
-- as it does across snapshots (a stored pair is never overwritten), so 1-then-2 equals 2 alone.
-- Only the stored ratings of the images this snapshot rates are compared: for a 1% tail that is a
-- small slice of sac_ratings instead of an anti-join against all of it.
-- $1 = snapshot key, $2 = ingest id. Returns the number of rows inserted.
INSERT INTO sac_ratings (sid, iid, rating, snapshot, ingest_id)
WITH votes AS MATERIALIZED (
    SELECT sid, iid, arg_min(rating, row_no) AS rating
    FROM sac_snap_ratings
    WHERE status = 'ok'
    GROUP BY sid, iid
), stored AS (
    SELECT sid, iid FROM sac_ratings WHERE iid IN (SELECT DISTINCT iid FROM votes)
)
SELECT v.sid, v.iid, v.rating, $1, $2
FROM votes v
WHERE NOT EXISTS (SELECT 1 FROM stored r WHERE r.sid = v.sid AND r.iid = v.iid)
