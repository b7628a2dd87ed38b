"""Helpers with no project dependency, shared by ingest/, nima_train/, critic/, assets/ and cli/: atomic writes,
regular files, imaging, contact sheets, tar writing, the shard format, settings ranges, argument types and the
HTTP client. Nothing here imports torch or another package of the project (docs/architecture.md)."""
