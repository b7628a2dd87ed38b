"""Which shard URLs an index or the command line may name: `pipe:` runs only with allow_pipe / --allow-pipe, a
fetched index lists http(s) shards only, file: URLs are local. Real index files, a real tar, a real HTTP server
on 127.0.0.1, and the real `python -m nima_train.train` command."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from assets.training import TrainConfig
from nima_train.data import ShardURLRefused, make_loader, resolve_shards, shard_urls
from nima_train.evaluate import main as evaluate_main
from nima_train.runs import TrainingRun, train_command
from tests.helpers.critic_models import save_test_checkpoint
from tests.helpers.http import quiet_file_server, serving
from tests.helpers.shards import source_jpeg

ROOT = Path(__file__).resolve().parents[1]
N_SAMPLES = 5


def write_shard(path: Path, n: int = N_SAMPLES) -> Path:
    """A WebDataset tar as the shards group writes one: <key>.jpg and <key>.json per sample."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        for k in range(n):
            target = [0.0] * 10
            target[k % 10] = 1.0
            for ext, data in (("jpg", source_jpeg(k)), ("json", json.dumps({"target": target}).encode())):
                info = tarfile.TarInfo(f"s{k:04d}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return path


def write_index(folder: Path, urls: list[str], nsamples: int = N_SAMPLES) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    index = folder / "index.json"
    index.write_text(json.dumps({"nsamples": nsamples, "shardlist": [{"url": u, "nsamples": 0} for u in urls]}))
    return index


@pytest.fixture
def pwned(tmp_path: Path) -> Path:
    return tmp_path / "PWNED"


@pytest.fixture
def hostile_split(tmp_path: Path, pwned: Path) -> Path:
    """The issue's one-line index: its only shard is `pipe:touch PWNED`."""
    split = tmp_path / "shards" / "ava" / "train"
    write_index(split, [f"pipe:touch {pwned}"])
    return split


@pytest.fixture
def http_root(tmp_path: Path) -> Iterator[str]:
    with serving(quiet_file_server(tmp_path / "shards")) as server:
        yield f"http://127.0.0.1:{server.server_address[1]}"


def test_local_index_with_pipe_runs_nothing_and_names_the_url_and_the_flag(hostile_split: Path, pwned: Path):
    with pytest.raises(ShardURLRefused) as refused:
        resolve_shards([hostile_split])
    message = str(refused.value)
    assert f"pipe:touch {pwned}" in message and "--allow-pipe" in message and "\n" not in message
    with pytest.raises(ShardURLRefused):
        shard_urls(hostile_split / "index.json")
    assert not pwned.exists()


def test_fetched_index_with_pipe_is_refused_even_with_allow_pipe(hostile_split: Path, pwned: Path, http_root: str):
    url = f"{http_root}/ava/train/index.json"
    for allow_pipe in (False, True):
        with pytest.raises(ShardURLRefused, match=r"fetched over http\(s\) may list only http\(s\)") as refused:
            resolve_shards([url], allow_pipe=allow_pipe)
        assert f"pipe:touch {pwned}" in str(refused.value) and "--allow-pipe" in str(refused.value)
    assert not pwned.exists()


def test_fetched_index_may_not_name_local_files_but_may_name_http_shards(tmp_path: Path, http_root: str):
    write_shard(tmp_path / "shards" / "sac" / "val" / "shard-000000.tar")
    split = tmp_path / "shards" / "sac" / "val"
    for listed in (f"file://{tmp_path}/secret.tar", "gs://bucket/x.tar"):
        write_index(split, [listed])
        with pytest.raises(ShardURLRefused, match="may list only http"):
            resolve_shards([f"{http_root}/sac/val/"], allow_pipe=True)
    write_index(split, ["shard-000000.tar", "/sac/val/shard-000000.tar"], nsamples=2 * N_SAMPLES)
    found = resolve_shards([f"{http_root}/sac/val/"])
    assert found.urls == [f"{http_root}/sac/val/shard-000000.tar"] * 2 and found.n_samples == 2 * N_SAMPLES
    batches = list(make_loader(found.urls[:1], train=False, batch_size=2, num_workers=0))
    assert sum(len(t) for _, t in batches) == N_SAMPLES


def test_with_allow_pipe_a_local_index_pipe_shard_is_read(tmp_path: Path):
    shard = write_shard(tmp_path / "store" / "shard.tar")
    split = tmp_path / "shards" / "ava" / "train"
    write_index(split, [f"pipe:cat {shard}"])
    found = resolve_shards([split], allow_pipe=True)
    assert found.urls == [f"pipe:cat {shard}"] and found.n_samples == N_SAMPLES
    batches = list(make_loader(found.urls, train=False, batch_size=2, num_workers=0))
    assert sum(len(t) for _, t in batches) == N_SAMPLES


def test_a_pipe_url_given_directly_needs_the_flag_and_is_counted_with_it(tmp_path: Path, pwned: Path):
    with pytest.raises(ShardURLRefused, match="--allow-pipe"):
        resolve_shards([f"pipe:touch {pwned}"])
    assert not pwned.exists()
    shard = write_shard(tmp_path / "shard.tar")
    found = resolve_shards([f"pipe:cat {shard}"], allow_pipe=True)
    assert (found.urls, found.n_samples) == ([f"pipe:cat {shard}"], N_SAMPLES)


def test_file_urls_are_local_and_local_indexes_refuse_other_schemes(tmp_path: Path):
    split = tmp_path / "shards" / "kuler" / "test"
    write_shard(split / "shard-000000.tar")
    write_index(split, ["shard-000000.tar"])
    found = resolve_shards([f"file://{split}/index.json"])
    assert found.urls == [str(split / "shard-000000.tar")] and found.n_samples == N_SAMPLES
    write_index(split, [f"file://{split}/shard-000000.tar"])
    assert resolve_shards([split]).urls == [str(split / "shard-000000.tar")]
    write_index(split, ["scp://host/x.tar"])
    with pytest.raises(ShardURLRefused, match="not scp:"):
        resolve_shards([split], allow_pipe=True)


def test_train_command_line_refuses_a_pipe_index_in_one_line(hostile_split: Path, pwned: Path, tmp_path: Path):
    done = subprocess.run(
        [sys.executable, "-m", "nima_train.train", "--data", str(hostile_split), "--output-dir", str(tmp_path / "run"),
         "--device", "cpu", "--weights", "none", "--no-progress"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode != 0 and "Traceback" not in done.stderr, done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("nima_train.train: refusing shard URL 'pipe:touch")
    assert "--allow-pipe" in done.stderr and not pwned.exists()


def test_evaluate_command_line_refuses_a_pipe_index_in_one_line(hostile_split: Path, pwned: Path, tmp_path: Path,
                                                                capsys: pytest.CaptureFixture):
    checkpoint = save_test_checkpoint(tmp_path / "model.pt", crop=96, resize=108)
    with pytest.raises(SystemExit) as exited:
        evaluate_main(["--checkpoint", str(checkpoint), "--data", str(hostile_split), "--out", str(tmp_path / "r"),
                       "--device", "cpu"])
    (message,) = capsys.readouterr().err.strip().splitlines()
    assert exited.value.code == 1
    assert message.startswith(f"python -m nima_train.evaluate: refusing shard URL 'pipe:touch {pwned}'")
    assert "--allow-pipe" in message and not pwned.exists()


def test_allow_pipe_config_reaches_the_command_line_without_changing_the_run_identity(tmp_path: Path):
    run = TrainingRun("nima_ava", [tmp_path / "train"], [tmp_path / "val"])
    allowed, default = TrainConfig(allow_pipe=True), TrainConfig()
    assert allowed.hyperparameters() == default.hyperparameters()  # a relaunch with the flag resumes the run
    assert "--allow-pipe" in train_command(run, allowed.hyperparameters(), tmp_path, allow_pipe=allowed.allow_pipe)
    assert "--allow-pipe" not in train_command(run, default.hyperparameters(), tmp_path)


def test_training_on_allowed_pipe_shards_that_yield_nothing_stops_instead_of_training_on_nothing(tmp_path: Path):
    from nima_train.train import main as train_main
    from nima_train.train import parse_args
    from tests.helpers.tiny_training import tiny_args

    split = tmp_path / "shards"
    write_index(split, ["pipe:true"], nsamples=16)  # the index promises samples; the command writes none
    args = parse_args(tiny_args(split, tmp_path / "run", "--allow-pipe", "--epochs-head", "1", "--epochs-full", "0"))
    with pytest.raises(ValueError, match="epoch 0 read no training batch"):
        train_main(args)
    assert not (tmp_path / "run" / "model.pt").exists()
