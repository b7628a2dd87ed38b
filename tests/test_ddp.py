"""DDP on the CPU: two torchrun processes (gloo) train on split shards and end with identical weights."""

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.helpers.tiny_training import tiny_args, write_tiny_shards


def test_two_ranks_end_with_identical_weights(tmp_path):
    write_tiny_shards(tmp_path / "train", 32, per_shard=8)
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", "-m",
           "nima_train.train", *tiny_args(tmp_path / "train", out, "--epochs-head", "1", "--epochs-full", "1",
                                          "--device", "cpu")]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    done = subprocess.run(cmd, cwd=Path(__file__).resolve().parents[1], env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["world_size"] == 2
    digests = summary["rank_weight_digests"]
    assert len(digests) == 2 and digests[0] == digests[1]
    # Both ranks ran the same number of steps: 32 samples / (8 per batch * 2 ranks) = 2 per epoch.
    assert len(summary["history"]) == 2
