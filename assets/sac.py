"""Asset group `sac` (see shared/DESIGN.md)."""
