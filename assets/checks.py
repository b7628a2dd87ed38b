"""Asset checks, plain functions returning dg.AssetCheckResult, one per gate."""
