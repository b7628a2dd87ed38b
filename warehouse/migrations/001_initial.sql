-- The warehouse contract of docs/contract.md. Paths are relative to $AESTHETIC_HOME unless absolute.

CREATE TABLE IF NOT EXISTS images (
    dataset     VARCHAR NOT NULL,
    image_id    VARCHAR NOT NULL,
    split       VARCHAR NOT NULL CHECK (split IN ('train', 'val', 'test')),
    source_path VARCHAR,
    path        VARCHAR NOT NULL,
    width       INTEGER NOT NULL,
    height      INTEGER NOT NULL,
    sha256      VARCHAR NOT NULL,
    updated_at  TIMESTAMP NOT NULL DEFAULT current_timestamp,
    PRIMARY KEY (dataset, image_id)
);

CREATE TABLE IF NOT EXISTS histograms (
    dataset      VARCHAR NOT NULL,
    image_id     VARCHAR NOT NULL,
    counts       INTEGER[10] NOT NULL,
    n_ratings    INTEGER NOT NULL,
    mean         DOUBLE NOT NULL,
    std          DOUBLE NOT NULL,
    p_normalized DOUBLE[10] NOT NULL,
    p_softmax    DOUBLE[10] NOT NULL,
    updated_at   TIMESTAMP NOT NULL DEFAULT current_timestamp,
    PRIMARY KEY (dataset, image_id)
);

CREATE TABLE IF NOT EXISTS rejects (
    dataset     VARCHAR NOT NULL,
    item_id     VARCHAR NOT NULL,
    stage       VARCHAR NOT NULL,
    reason      VARCHAR NOT NULL,
    batch       VARCHAR,
    rejected_at TIMESTAMP NOT NULL DEFAULT current_timestamp,
    PRIMARY KEY (dataset, item_id, stage)
);

CREATE TABLE IF NOT EXISTS shards (
    path      VARCHAR PRIMARY KEY,
    dataset   VARCHAR NOT NULL,
    split     VARCHAR NOT NULL,
    n_samples INTEGER NOT NULL,
    bytes     BIGINT NOT NULL,
    sha256    VARCHAR NOT NULL
);

CREATE TABLE IF NOT EXISTS models (
    version         VARCHAR PRIMARY KEY,
    name            VARCHAR NOT NULL,
    parent_version  VARCHAR,
    checkpoint_path VARCHAR NOT NULL,
    sha256          VARCHAR NOT NULL,
    config          JSON,
    created_at      TIMESTAMP NOT NULL DEFAULT current_timestamp
);

CREATE TABLE IF NOT EXISTS eval_reports (
    model_version   VARCHAR NOT NULL,
    dataset         VARCHAR NOT NULL,
    split           VARCHAR NOT NULL,
    n               INTEGER NOT NULL,
    binary_accuracy DOUBLE,
    exact_accuracy  DOUBLE,
    lcc_mean        DOUBLE,
    srcc_mean       DOUBLE,
    lcc_std         DOUBLE,
    srcc_std        DOUBLE,
    emd_r1          DOUBLE,
    emd_r2          DOUBLE,
    created_at      TIMESTAMP NOT NULL DEFAULT current_timestamp,
    PRIMARY KEY (model_version, dataset, split)
);

-- Promotion aliases such as 'production' that the critic loads.
CREATE TABLE IF NOT EXISTS model_aliases (
    alias       VARCHAR PRIMARY KEY,
    version     VARCHAR NOT NULL,
    promoted_at TIMESTAMP NOT NULL DEFAULT current_timestamp
);

-- AVA's semantic tags and photo challenges (tags.txt, challenges.txt).
CREATE TABLE IF NOT EXISTS ava_tags (
    tag_id INTEGER PRIMARY KEY,
    name   VARCHAR NOT NULL
);

CREATE TABLE IF NOT EXISTS ava_challenges (
    challenge_id INTEGER PRIMARY KEY,
    name         VARCHAR NOT NULL
);
