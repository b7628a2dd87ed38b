-- Kuler themes behind the `images`/`histograms` rows of dataset 'kuler' (image_id = theme row, 1-based).
-- Keeps what those tables have no column for: the Kuler theme id and name, the colours, and the label
-- settings the histogram was built with (so an unchanged re-run can tell it has nothing to rewrite).
CREATE TABLE IF NOT EXISTS kuler_themes (
    image_id    VARCHAR PRIMARY KEY,
    theme_id    BIGINT NOT NULL,
    name        VARCHAR NOT NULL,
    release     VARCHAR NOT NULL CHECK (release IN ('2014', '2011')),
    colours     DOUBLE[15] NOT NULL,  -- r,g,b of the five colours in theme order, 0..1
    mapping     VARCHAR NOT NULL,     -- high_spread | low_spread
    temperature DOUBLE NOT NULL,      -- softmax temperature of histograms.p_softmax
    updated_at  TIMESTAMP NOT NULL DEFAULT current_timestamp
);
