-- Issue 33: exported models (ONNX files scored by ONNX Runtime), kept apart from `models`: an export is a file
-- derived from a model version, not a model. A refused export is recorded too (path and sha256 NULL, `refused`
-- the exporter's one line), so that `--backend auto` can say why it scores with torch.
CREATE TABLE IF NOT EXISTS exports (
    model_version VARCHAR NOT NULL,
    format VARCHAR NOT NULL,
    path VARCHAR,
    sha256 VARCHAR,
    opset INTEGER NOT NULL,
    exporter VARCHAR NOT NULL,
    refused VARCHAR,
    created_at TIMESTAMP NOT NULL DEFAULT current_timestamp,
    PRIMARY KEY (model_version, format)
);
