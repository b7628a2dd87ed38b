-- Insert the snapshot's valid ratings not seen before; within one file the first row of a (sid, iid) wins,
-- as it does across snapshots (a stored pair is never overwritten), so 1-then-2 equals 2 alone.
-- $1 = snapshot key, $2 = ingest id.
INSERT INTO sac_ratings (sid, iid, rating, snapshot, ingest_id)
SELECT s.sid, s.iid, arg_min(s.value, s.row_no)::TINYINT, $1, $2
FROM sac_snap_ratings s
WHERE s.status = 'ok'
  AND NOT EXISTS (SELECT 1 FROM sac_ratings r WHERE r.sid = s.sid AND r.iid = s.iid)
GROUP BY s.sid, s.iid
