-- Mark stale the histograms of the images whose ratings the ingest $1 inserted.
INSERT OR IGNORE INTO sac_pending_histograms (iid)
SELECT DISTINCT iid FROM sac_ratings WHERE ingest_id = $1
