-- The crop candidates (temp table sac_crop_todo, sac_crop_todo.sql) with their generation and path, and
-- whether they have at least one accepted vote; image rows whose id is not an integer come last. A retried
-- earlier reject is a candidate only if the snapshot has the image.
SELECT t.iid, coalesce(t.bad_id, CAST(t.iid AS VARCHAR)) AS raw_id, TRY_CAST(i.gid AS BIGINT) AS gid, p.path,
       EXISTS (SELECT 1 FROM sac_ratings r WHERE r.iid = t.iid) AS has_votes
FROM sac_crop_todo t
LEFT JOIN sac_src.images i ON TRY_CAST(i.id AS BIGINT) = t.iid
-- images.id and paths.iid are INTEGER PRIMARY KEYs in SAC's schema: at most one path per image.
LEFT JOIN sac_src.paths p ON TRY_CAST(p.iid AS BIGINT) = t.iid
WHERE NOT t.retry OR i.id IS NOT NULL
ORDER BY t.iid NULLS LAST, raw_id
