"""Asset group `kuler` (see shared/DESIGN.md)."""
