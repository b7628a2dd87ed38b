-- New votes on images that already have a histogram, queued to be added to its counts (warehouse/sac.py).
-- Written in the same transaction as the ratings, emptied in the one that updates the histograms. For every
-- SAC image with a histogram, its counts plus its queued votes equal the counts of all its stored ratings:
-- a 1% backfill then counts its own votes instead of every rating of the 95k images it touches.
-- Images without a histogram go to sac_pending_histograms instead and are counted from all their ratings.
CREATE TABLE IF NOT EXISTS sac_pending_votes (
    iid    BIGINT  NOT NULL,
    rating TINYINT NOT NULL CHECK (rating BETWEEN 1 AND 10)
);
