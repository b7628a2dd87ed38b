-- The votes a backfill inserted, queued to be added to their images' stored histograms (warehouse/sac.py).
-- Written in the same transaction as the ratings, emptied in the one that updates the histograms. For every
-- SAC image with a histogram, its counts plus its queued votes equal the counts of all its stored ratings:
-- a 1% backfill then counts its own votes instead of every rating of the 95k images it touches. A queued
-- image without a histogram is counted from all its ratings instead, as are those in sac_pending_histograms.
CREATE TABLE IF NOT EXISTS sac_pending_votes (
    iid    BIGINT  NOT NULL,
    rating TINYINT NOT NULL CHECK (rating BETWEEN 1 AND 10)
);
