-- Queue the votes the ingest $1 inserted on images that have a histogram (temp table sac_new_vote_images,
-- sac_mark_pending.sql), to be added to it. ingest_id = $1 reads only the row groups this ingest appended
-- (the others' min/max ingest_id rule them out).
INSERT INTO sac_pending_votes (iid, rating)
SELECT r.iid, r.rating FROM sac_ratings r
WHERE r.ingest_id = $1 AND r.iid IN (SELECT iid FROM sac_new_vote_images WHERE has_histogram)
