"""Asset group `evaluation` (see shared/DESIGN.md)."""
