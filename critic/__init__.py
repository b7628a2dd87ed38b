"""The aesthetic critic: a trained NIMA scoring, filtering, de-duplicating and evolving images; no Dagster here."""
