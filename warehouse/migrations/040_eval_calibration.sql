-- Issue 21: how far predicted means are from the truth in score units, how compressed their scale is, and
-- the same through the model's calibration (NULL for a model without one).
ALTER TABLE eval_reports ADD COLUMN IF NOT EXISTS mae_mean DOUBLE;
ALTER TABLE eval_reports ADD COLUMN IF NOT EXISTS rmse_mean DOUBLE;
ALTER TABLE eval_reports ADD COLUMN IF NOT EXISTS spread_ratio DOUBLE;
ALTER TABLE eval_reports ADD COLUMN IF NOT EXISTS mae_mean_calibrated DOUBLE;
ALTER TABLE eval_reports ADD COLUMN IF NOT EXISTS rmse_mean_calibrated DOUBLE;
ALTER TABLE eval_reports ADD COLUMN IF NOT EXISTS spread_ratio_calibrated DOUBLE;
ALTER TABLE eval_reports ADD COLUMN IF NOT EXISTS srcc_mean_calibrated DOUBLE;
