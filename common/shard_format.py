"""What a split folder of shards holds, shared by the writer (ingest/shard_writer.py), the reader
(nima_train/data.py) and the training runs (nima_train/runs.py). Imports nothing, so the code location can use it."""

INDEX_NAME = "index.json"  # one per split: the shard list with sample counts (wids' format plus ours)
