"""The train loop on tiny real shards: it learns, checkpoints every epoch, resumes after a kill."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import torch
import webdataset as wds
from PIL import Image

from nima_train.checkpoint import load_checkpoint, model_from_checkpoint
from nima_train.train import get_args_parser, main
from tests.helpers.tiny_training import tiny_args, write_tiny_shards


def test_training_writes_a_checkpoint_every_epoch_and_a_servable_model(tmp_path):
    write_tiny_shards(tmp_path / "train", 24)
    write_tiny_shards(tmp_path / "val", 8, seed=1, split="val")
    out = tmp_path / "run"
    args = get_args_parser().parse_args(
        tiny_args(tmp_path / "train", out, "--val-data", str(tmp_path / "val"), "--epochs-head", "1",
                  "--epochs-full", "1"))
    summary = main(args)
    assert [h["phase"] for h in summary["history"]] == ["head", "full"]
    assert all(np.isfinite(h["loss"]) and np.isfinite(h["val_loss"]) for h in summary["history"])
    assert summary["n_train"] == 24
    state = load_checkpoint(out / "checkpoint.pt")
    assert state["epoch"] == 1 and state["phase"] == "full" and "optimizer" in state and "scheduler" in state
    model = model_from_checkpoint(out / "model.pt")
    probs = model(torch.zeros(2, 3, 32, 32))
    assert torch.allclose(probs.sum(-1), torch.ones(2), atol=1e-5)
    assert json.loads((out / "summary.json").read_text())["history"] == json.loads(json.dumps(summary["history"]))
    # 8 validation samples are too few to calibrate on: the model is stored without one, and says why.
    assert "calibration" not in load_checkpoint(out / "model.pt")
    assert summary["calibration"] == {"method": "none", "split": "val", "n": 8,
                                      "reason": "fewer than 20 validation samples"}


def test_head_phase_leaves_the_backbone_untouched_and_starts_from_a_checkpoint(tmp_path):
    from nima_train.checkpoint import save_checkpoint
    from nima_train.model import NIMA

    write_tiny_shards(tmp_path / "train", 16)
    torch.manual_seed(3)
    start = NIMA("mobilenet_v2", weights="none")
    save_checkpoint(tmp_path / "parent.pt", {"model": start.state_dict(), "args": {"backbone": "mobilenet_v2"}})
    out = tmp_path / "run"
    main(get_args_parser().parse_args(tiny_args(
        tmp_path / "train", out, "--weights", str(tmp_path / "parent.pt"), "--epochs-head", "1", "--epochs-full", "0")))
    trained = load_checkpoint(out / "model.pt")["model"]
    before = start.state_dict()
    backbone_weights = [k for k in before if k.startswith("backbone.") and before[k].is_floating_point()
                        and "running" not in k]
    assert all(torch.equal(before[k], trained[k]) for k in backbone_weights)
    assert not torch.equal(before["head.1.weight"], trained["head.1.weight"])


def test_a_killed_run_resumes_from_its_last_epoch(tmp_path):
    import os
    import subprocess
    import sys
    import time

    write_tiny_shards(tmp_path / "train", 16)
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "nima_train.train",
           *tiny_args(tmp_path / "train", out, "--epochs-head", "0", "--epochs-full", "40")]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.Popen(cmd, cwd=root, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not (out / "checkpoint.pt").exists() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        proc.kill()  # SIGKILL mid-run: no clean-up code runs
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode != 0, "the run finished before it could be killed"
    killed_at = load_checkpoint(out / "checkpoint.pt")
    assert not (out / "model.pt").exists()
    first_losses = [h["loss"] for h in killed_at["history"]]
    done = subprocess.run([*cmd[:-1], str(killed_at["epoch"] + 3)], cwd=root, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"resuming from {out / 'checkpoint.pt'} at epoch {killed_at['epoch'] + 1}" in done.stdout
    summary = json.loads((out / "summary.json").read_text())
    assert [h["epoch"] for h in summary["history"]] == list(range(killed_at["epoch"] + 3))
    assert [h["loss"] for h in summary["history"][: len(first_losses)]] == first_losses


def test_negatives_shard_holds_score_one_samples_readable_by_webdataset(tmp_path):
    from nima_train.negatives import write_negatives_shard

    path = write_negatives_shard(tmp_path / "neg.tar", 24, seed=0)
    samples = list(wds.WebDataset(str(path), shardshuffle=False).decode("pil").to_tuple("jpg", "json"))
    assert len(samples) == 24
    assert all(meta["target"] == [1.0] + [0.0] * 9 and img.size == (256, 256) for img, meta in samples)
    assert any(np.asarray(img).min() >= 250 for img, _ in samples)  # a blank white canvas
    assert len({img.tobytes() for img, _ in samples}) > 4  # and varied broken renders


def test_sample_without_a_target_is_an_error_not_a_silent_skip(tmp_path):
    import pytest

    folder = tmp_path / "bad"
    folder.mkdir()
    with wds.TarWriter(str(folder / "bad-000000.tar")) as sink:
        buf = io.BytesIO()
        Image.new("RGB", (40, 40)).save(buf, format="JPEG")
        sink.write({"__key__": "x_1", "jpg": buf.getvalue(), "json": json.dumps({"image_id": "1"}).encode()})
    (folder / "index.json").write_text(json.dumps({"nsamples": 1, "shardlist": [{"url": "bad-000000.tar"}]}))
    with pytest.raises(ValueError, match="lacks .target."):
        main(get_args_parser().parse_args(tiny_args(folder, tmp_path / "run", "--epochs-head", "0",
                                                    "--epochs-full", "1", "--batch-size", "1")))


def test_stored_size_uses_the_readers_tensor_crops_with_the_same_meaning_as_the_v2_transforms(tmp_path):
    from nima_train import data
    from nima_train.transforms import eval_transform, normalize

    (shard,) = write_tiny_shards(tmp_path / "s", 8, size=256)
    # resize 256 (the GPU setting): no per-image v2 transform, the reader's tensor path; other sizes keep v2.
    assert data.loader_transform(224, 256, train=True) is None and data.loader_transform(224, 256, train=False) is None
    assert data.loader_transform(32, 36, train=True) is not None

    def loader(train: bool):
        return data.split_loader([str(shard)], train=train, crop=224, resize=256, batch_size=8, workers=0)

    sources = [data.decode_image(s["jpg"]) for s in wds.WebDataset(str(shard), shardshuffle=False)]
    (raw, _), = list(loader(train=False))
    assert raw.dtype == torch.uint8  # normalised on the device by batch_to_device
    images = data.batch_to_device(raw, torch.device("cpu"))
    expected = torch.stack([eval_transform(224, 256)(s) for s in sources])
    assert images.dtype == torch.float32 and torch.allclose(images, expected, atol=1e-5)  # centre crop

    (raw, _), = list(loader(train=True))
    images = data.batch_to_device(raw, torch.device("cpu"))
    assert images.shape == (8, 3, 224, 224)
    for got, source in zip(images, sources, strict=True):  # one shard, no shuffle buffer: order kept
        full = normalize(source)
        crops = [c for top in range(33) for left in range(33)
                 for c in (full[:, top:top + 224, left:left + 224], full[:, top:top + 224, left:left + 224].flip(-1))]
        assert any(torch.allclose(got, c, atol=1e-5) for c in crops)  # a random crop, maybe flipped


def test_a_split_smaller_than_one_batch_trains_with_a_batch_as_large_as_the_split(tmp_path):
    write_tiny_shards(tmp_path / "train", 6)
    out = tmp_path / "run"
    args = get_args_parser().parse_args(tiny_args(tmp_path / "train", out, "--epochs-head", "1", "--epochs-full",
                                                  "0", "--batch-size", "16"))
    summary = main(args)
    assert summary["args"]["batch_size"] == 6 and np.isfinite(summary["history"][0]["loss"])
