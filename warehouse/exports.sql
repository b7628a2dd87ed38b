-- One row per (model version, format): the latest export or refusal replaces the one before.
INSERT OR REPLACE INTO exports (model_version, format, path, sha256, opset, exporter, refused, created_at)
VALUES (?, ?, ?, ?, ?, ?, ?, current_timestamp)
