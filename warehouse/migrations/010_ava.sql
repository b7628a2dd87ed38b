-- AVA stage tables (issue 3).

-- Per-image AVA.txt facts that are not labels: the line it came from, its two tags and its challenge.
CREATE TABLE IF NOT EXISTS ava_image_meta (
    image_id     VARCHAR PRIMARY KEY,
    line         INTEGER NOT NULL,
    tag1         INTEGER NOT NULL,
    tag2         INTEGER NOT NULL,
    challenge_id INTEGER NOT NULL
);

-- What the crop of each image was made from, so an unchanged source is never decoded twice:
-- the source signature (location, size, mtime), the crop settings, and the outcome. For an
-- accepted image the crop file's size and mtime are kept too, to notice a crop deleted or
-- changed behind the pipeline's back.
CREATE TABLE IF NOT EXISTS ava_crop_state (
    image_id       VARCHAR PRIMARY KEY,
    source_key     VARCHAR NOT NULL,
    source_size    BIGINT NOT NULL,
    source_mtime_ns BIGINT NOT NULL,
    spec           VARCHAR NOT NULL,
    outcome        VARCHAR NOT NULL CHECK (outcome IN ('ok', 'rejected')),
    reason         VARCHAR,
    crop_path      VARCHAR,
    crop_size      BIGINT,
    crop_mtime_ns  BIGINT,
    checked_at     TIMESTAMP NOT NULL DEFAULT current_timestamp
);
