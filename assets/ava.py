"""Asset group `ava` (see shared/DESIGN.md)."""
