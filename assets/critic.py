"""Asset group `critic` (see shared/DESIGN.md)."""
