-- Issue 27: each model name has an alias of its own naming its current version (warehouse/models_lookup.py).
-- Before, the current version was the newest `models` row of the name; a warehouse from then starts with that.
INSERT INTO model_aliases (alias, version, promoted_at)
SELECT name, version, current_timestamp
FROM (SELECT name, version, row_number() OVER (PARTITION BY name ORDER BY created_at DESC, version) AS r
      FROM models)
WHERE r = 1 AND name NOT IN (SELECT alias FROM model_aliases);
