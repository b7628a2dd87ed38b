-- Stored 'unknown image' rejects whose image the attached snapshot now has: those earlier rows would be
-- votes now, so the snapshot must be read whole (warehouse/sac.resume_rowid), not just its new tail.
SELECT count(*)
FROM rejects x
JOIN sac_snap_images s ON s.iid = TRY_CAST(split_part(x.item_id, ':', 3) AS BIGINT)
WHERE x.dataset = 'sac' AND x.stage = 'ratings' AND x.reason LIKE 'unknown image:%'
