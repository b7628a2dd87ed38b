-- How many ratings rows the snapshot has in each class (see sac_stage.sql).
SELECT status, count(*) AS n FROM sac_snap_ratings GROUP BY status ORDER BY status
