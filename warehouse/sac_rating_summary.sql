-- How many ratings rows the snapshot has in each class (see sac_stage_ratings.sql).
SELECT CAST(status AS VARCHAR), count(*) AS n FROM sac_snap_ratings GROUP BY status ORDER BY 1
