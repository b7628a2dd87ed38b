-- Images of the snapshot without a crop yet (new ones, and earlier rejects worth retrying), with
-- whether they have at least one accepted vote; image rows whose id is not an integer come last.
SELECT s.iid, s.raw_id, s.gid, s.path,
       EXISTS (SELECT 1 FROM sac_ratings r WHERE r.iid = s.iid) AS has_votes
FROM sac_snap_images s
WHERE s.iid IS NULL OR NOT EXISTS (
    SELECT 1 FROM images i WHERE i.dataset = 'sac' AND i.image_id = CAST(s.iid AS VARCHAR)
)
ORDER BY s.iid NULLS LAST, s.raw_id
