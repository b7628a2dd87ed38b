"""Asset group `training` (see shared/DESIGN.md)."""
