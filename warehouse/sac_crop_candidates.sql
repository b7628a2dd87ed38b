-- Images of the snapshot without a crop yet (new ones, and earlier rejects worth retrying), with
-- whether they have at least one accepted vote; image rows whose id is not an integer come last.
SELECT s.iid, s.raw_id, s.gid, s.path,
       EXISTS (SELECT 1 FROM sac_ratings r WHERE r.iid = s.iid) AS has_votes
FROM sac_snap_images s
-- Compared as integers (SAC image_ids are written as str(iid)): a third of the time of matching 1M strings.
WHERE s.iid IS NULL OR s.iid NOT IN (
    SELECT TRY_CAST(i.image_id AS BIGINT) AS iid FROM images i
    WHERE i.dataset = 'sac' AND TRY_CAST(i.image_id AS BIGINT) IS NOT NULL
)
ORDER BY s.iid NULLS LAST, s.raw_id
