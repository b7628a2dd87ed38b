"""Asset group `shards` (see shared/DESIGN.md)."""
