"""Bad arguments end every command line at parse time with one line naming them: `aesthetic` (every verb),
`python -m nima_train.train` and `python -m nima_train.evaluate`. No traceback, no work done first."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from cli.main import VERBS, build_parser, main
from nima_train import evaluate, train
from tests.helpers.critic_models import picture, save_test_checkpoint

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def places(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """An image folder, an empty folder, a plain file, and an AESTHETIC_HOME with no warehouse: a verb that
    loaded a model before checking its arguments would stop at 'no warehouse' instead."""
    (tmp_path / "images").mkdir()
    picture(1, 64).save(tmp_path / "images" / "a.png")
    (tmp_path / "empty").mkdir()
    (tmp_path / "notes.txt").write_text("a file, not a folder\n")
    (tmp_path / "home").mkdir()
    monkeypatch.setenv("AESTHETIC_HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    return {"images": "images", "empty": "empty", "file": "notes.txt"}


# (argv, what the message must name). {images}, {empty} and {file} are filled from the fixture.
AESTHETIC_CASES = [
    (["score", "{empty}"], "nothing matched empty"),
    (["score", "{empty}/*.png", "missing.jpg"], "nothing matched"),
    (["score", "{images}", "--batch-size", "0"], "--batch-size: '0'"),
    (["score", "{images}", "--batch-size", "99999"], "--batch-size: '99999'"),
    (["score", "{images}", "--image-size", "-224"], "--image-size: '-224'"),
    (["score", "{images}", "--resize", "nan"], "--resize: 'nan'"),
    (["score", "{images}", "--model", "{empty}"], "--model: 'empty' is a folder"),
    (["score", "{images}", "--model", "gone.pt"], "--model: checkpoint file 'gone.pt' does not exist"),
    (["score", "{images}", "--model", ""], "--model"),
    (["filter", "{images}", "--min-score", "nan"], "--min-score: 'nan'"),
    (["filter", "{images}", "--min-score", "11"], "--min-score: '11'"),
    (["filter", "{images}", "--min-score=-inf"], "--min-score: '-inf'"),
    (["filter", "{images}", "--min-score", "5", "--similarity", "7"], "--similarity: '7'"),
    (["filter", "{images}", "--min-score", "5", "--max-hamming", "-3"], "--max-hamming: '-3'"),
    (["filter", "{images}", "--min-score", "5", "--max-hamming", "65"], "--max-hamming: '65'"),
    (["filter", "{images}", "--min-score", "5", "--copy-to", "{file}"], "--copy-to: 'notes.txt' is an existing file"),
    (["filter", "{images}", "--min-score", "5", "--copy-to", "{file}/kept"], "--copy-to: 'notes.txt/kept'"),
    (["filter", "{empty}", "--min-score", "5"], "nothing matched empty"),
    (["filter", "{images}"], "give at least one of --min-score, --min-percentile, --top-fraction"),
    (["filter", "{images}", "--min-percentile", "101"], "--min-percentile: '101'"),
    (["filter", "{images}", "--min-percentile", "nan"], "--min-percentile: 'nan'"),
    (["filter", "{images}", "--top-fraction", "0"], "--top-fraction: '0'"),
    (["filter", "{images}", "--top-fraction", "1.5"], "--top-fraction: '1.5'"),
    (["filter", "{images}", "--min-score", "5", "--threshold-on", "median"], "--threshold-on: invalid choice"),
    (["evolve", "--out", "o", "--rounds", "-1"], "--rounds: '-1'"),
    (["evolve", "--out", "o", "--threads", "0"], "--threads: '0'"),
    (["score", "a.jpg", "--backend", "gpu"], "--backend: invalid choice: 'gpu'"),
    (["export", "production", "--format", "onnx", "--out", "m.onnx", "--opset", "99"], "--opset: '99'"),
    (["export", "production", "--format", "tflite", "--out", "m.onnx"], "--format: invalid choice: 'tflite'"),
    (["evolve", "--out", "o", "--rounds", "0"], "--rounds: '0'"),
    (["evolve", "--out", "o", "--batch", "0"], "--batch: '0'"),
    (["evolve", "--out", "o", "--size", "0"], "--size: '0'"),
    (["evolve", "--out", "o", "--rate", "-5"], "--rate: '-5'"),
    (["evolve", "--out", "o", "--strength", "nan"], "--strength: 'nan'"),
    (["evolve", "--out", "o", "--seed", "-1"], "--seed: '-1'"),
    (["evolve", "--out", "{file}"], "--out: 'notes.txt' is an existing file"),
    (["evolve", "--out", "o", "--shape", "circle"], "--shape: invalid choice: 'circle'"),
    (["sample-data", "--out", "{file}"], "--out: 'notes.txt' is an existing file"),
    (["sample-data", "--out", "raw", "--ava", "-1"], "--ava: '-1'"),
    (["sample-data", "--out", "raw", "--kuler", "1.5"], "--kuler: '1.5' is not a whole number"),
    (["sample-data", "--out", "raw", "--seed", "-7"], "--seed: '-7'"),
    (["serve", "--port", "70000"], "--port: '70000'"),
    (["serve", "--max-bytes", "0"], "--max-bytes: '0'"),
    (["serve", "--max-images", "-1"], "--max-images: '-1'"),
    (["serve", "--max-pixels", "many"], "--max-pixels: 'many' is not a whole number"),
    (["serve", "--image-size", "0"], "--image-size: '0'"),
    (["serve", "--deadline", "nan"], "--deadline: 'nan'"),
    (["serve", "--deadline", "0"], "--deadline: '0'"),
    (["serve", "--max-in-flight", "0"], "--max-in-flight: '0'"),
    (["serve", "--decode-workers", "-2"], "--decode-workers: '-2'"),
    (["serve", "--max-request-pixels", "0"], "--max-request-pixels: '0'"),
    (["serve", "--max-connections", "x"], "--max-connections: 'x'"),
    (["studio", "--port", "-1"], "--port: '-1'"),
    (["studio", "--shape", "circle"], "--shape: invalid choice: 'circle'"),
    (["studio", "--min-score", "11"], "--min-score: '11'"),
    (["studio", "--top-fraction", "0"], "--top-fraction: '0'"),
    (["studio", "--size", "8"], "--size: '8'"),
    (["studio", "--max-bytes", "0"], "--max-bytes: '0'"),
    (["studio", "unpublish"], "argument action: invalid choice: 'unpublish'"),
    (["curate", "x.tar", "--out", "{file}"], "--out: 'notes.txt' is an existing file"),
    (["curate", "x.tar", "--out", "o", "--min-score", "nan"], "--min-score: 'nan'"),
    (["curate", "x.tar", "--out", "o", "--similarity", "0"], "--similarity: '0'"),
    (["curate", "x.tar", "--out", "o", "--max-hamming", "65"], "--max-hamming: '65'"),
    (["curate", "x.tar", "--out", "o", "--workers", "-1"], "--workers: '-1'"),
    (["curate", "x.tar", "--out", "o", "--batch-size", "0"], "--batch-size: '0'"),
    (["download", "imagenet"], "argument dataset: invalid choice: 'imagenet'"),
    (["download", "ava", "--sha256", "abc"], "--sha256: 'abc' is not a SHA-256"),
    (["download", "ava", "--size", "-1"], "--size: '-1'"),
    (["download", "ava", "--max-bytes", "0"], "--max-bytes: '0'"),
    (["download", "ava", "--retries", "nan"], "--retries: 'nan'"),
    (["download", "ava", "--raw", "{file}"], "--raw: 'notes.txt' is an existing file"),
    (["unknown-verb"], "invalid choice: 'unknown-verb'"),
]


def _fill(argv: list[str], places: dict[str, str]) -> list[str]:
    return [a.format(**places) for a in argv]


def _one_line_error(run: Callable[[], object], capsys: pytest.CaptureFixture) -> tuple[int | str, str]:
    """The exit status and the single stderr line of a command line stopped by its arguments."""
    with pytest.raises(SystemExit) as stopped:
        run()
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return stopped.value.code, lines[0]


@pytest.mark.parametrize(("argv", "named"), AESTHETIC_CASES, ids=[" ".join(c[0]) for c in AESTHETIC_CASES])
def test_aesthetic_rejects_bad_arguments_with_one_line_and_status_2(argv, named, places, capsys) -> None:
    argv = _fill(argv, places)
    code, line = _one_line_error(lambda: main(argv), capsys)
    assert code == 2
    assert line.startswith(f"aesthetic {argv[0]}: error: " if argv[0] in VERBS else "aesthetic: error: ")
    assert named in line, line
    assert not Path("o").exists() and not Path("raw").exists()  # refused before anything was written


def test_every_verb_is_walked_by_the_bad_argument_cases() -> None:
    assert set(VERBS) == {argv[0] for argv, _ in AESTHETIC_CASES} - {"unknown-verb"}


def test_edge_values_inside_the_ranges_are_accepted(places) -> None:
    parser = build_parser()
    args = parser.parse_args(["filter", "images", "--min-score", "0", "--similarity", "1", "--max-hamming", "64",
                              "--copy-to", "new/kept", "--batch-size", "1024", "--image-size", "32"])
    assert (args.min_score, args.similarity, args.max_hamming, args.copy_to) == (0.0, 1.0, 64, "new/kept")
    args = parser.parse_args(["evolve", "--out", "empty", "--rounds", "1", "--batch", "1", "--rate", "0",
                              "--strength", "1", "--size", "4096", "--seed", "0"])
    assert (args.rounds, args.batch, args.rate, args.strength, args.size) == (1, 1, 0.0, 1.0, 4096)
    assert parser.parse_args(["serve", "--port", "0"]).port == 0
    assert parser.parse_args(["sample-data", "--out", "raw", "--ava", "0"]).ava == 0


# What a --model file that is not a NIMA checkpoint holds, and a word the one-line error must contain.
BAD_CHECKPOINTS: dict[str, tuple[Callable[[Path], None], str]] = {
    "random bytes": (lambda p: p.write_bytes(bytes(range(256)) * 4), "not a readable checkpoint"),
    "empty file": (lambda p: p.write_bytes(b""), "not a readable checkpoint"),
    "truncated checkpoint": (lambda p: p.write_bytes(save_test_checkpoint(p).read_bytes()[:5000]),
                             "not a readable checkpoint"),
    "a tensor": (lambda p: torch.save(torch.zeros(3), p), "holds a Tensor"),
    "a dict without weights": (lambda p: torch.save({"epoch": 3}, p), "not a NIMA checkpoint"),
    "weights of another network": (lambda p: torch.save({"model": {"w": torch.zeros(2)},
                                                         "args": {"backbone": "mobilenet_v2"}}, p),
                                   "does not hold NIMA weights"),
}


@pytest.mark.parametrize("kind", list(BAD_CHECKPOINTS))
def test_a_model_file_that_is_no_checkpoint_is_a_one_line_error(kind, places, tmp_path, capsys) -> None:
    write, says = BAD_CHECKPOINTS[kind]
    bad = tmp_path / "bad.pt"
    write(bad)
    with pytest.raises(SystemExit) as stopped:
        main(["score", "images", "--model", str(bad)])
    message = str(stopped.value.code)
    assert message.startswith("aesthetic: --model: ") and str(bad) in message and says in message
    assert "\n" not in message and "Traceback" not in capsys.readouterr().err


def test_the_real_entry_point_prints_no_traceback_for_a_corrupt_model(places, tmp_path) -> None:
    bad = tmp_path / "corrupt.pt"
    bad.write_bytes(b"PK\x03\x04 not really a zip")
    proc = subprocess.run([sys.executable, "-m", "cli", "score", "images", "--model", str(bad)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()] and "Traceback" not in proc.stderr
    assert proc.stderr.startswith(f"aesthetic: --model: {bad} is not a readable checkpoint")


TRAIN_CASES = [
    (["--output-dir", "{file}"], "--output-dir: 'notes.txt' is an existing file"),
    (["--epochs-head", "-1"], "--epochs-head: '-1'"),
    (["--epochs-head", "0", "--epochs-full", "0"], "--epochs-head and --epochs-full are both 0"),
    (["--lr-head", "nan"], "--lr-head: 'nan'"),
    (["--lr-full", "0"], "--lr-full: '0'"),
    (["--lr-scale", "inf"], "--lr-scale: 'inf'"),
    (["--lr-decay", "1.5"], "--lr-decay: '1.5'"),
    (["--weight-decay", "-0.1"], "--weight-decay: '-0.1'"),
    (["--dropout", "1"], "--dropout: '1'"),
    (["--batch-size", "0"], "--batch-size: '0'"),
    (["--crop", "0"], "--crop: '0'"),
    (["--workers", "-2"], "--workers: '-2'"),
    (["--negatives", "nan"], "--negatives: 'nan'"),
    (["--seed", "-1"], "--seed: '-1'"),
    (["--weights", "gone.pt"], "--weights: 'gone.pt' does not exist"),
    (["--device", "gpu7"], "--device: 'gpu7' is not a torch device"),
    (["--print-freq", "-1"], "--print-freq: '-1'"),
]


@pytest.mark.parametrize(("extra", "named"), TRAIN_CASES, ids=[" ".join(c[0]) for c in TRAIN_CASES])
def test_training_rejects_bad_arguments_with_one_line(extra, named, places, capsys) -> None:
    argv = ["--data", "shards", "--output-dir", "run", *_fill(extra, places)]
    code, line = _one_line_error(lambda: train.parse_args(argv), capsys)
    assert code == 2 and line.startswith("python -m nima_train.train: error: ") and named in line, line


EVALUATE_CASES = [
    (["--checkpoint", "gone.pt"], "--checkpoint: 'gone.pt' does not exist"),
    (["--checkpoint", "{empty}"], "--checkpoint: 'empty' is a folder"),
    (["--out", "{file}"], "--out: 'notes.txt' is an existing file"),
    (["--summary", "gone.json"], "--summary: 'gone.json' does not exist"),
    (["--batch-size", "-64"], "--batch-size: '-64'"),
    (["--device", "tpu:x"], "--device: 'tpu:x'"),
]


@pytest.mark.parametrize(("extra", "named"), EVALUATE_CASES, ids=[" ".join(c[0]) for c in EVALUATE_CASES])
def test_evaluation_rejects_bad_arguments_with_one_line(extra, named, places, tmp_path, capsys) -> None:
    checkpoint = save_test_checkpoint(tmp_path / "model.pt")
    argv = ["--checkpoint", str(checkpoint), "--data", "shards", "--out", "report", *_fill(extra, places)]
    code, line = _one_line_error(lambda: evaluate.main(argv), capsys)
    assert code == 2 and line.startswith("python -m nima_train.evaluate: error: ") and named in line, line


def test_evaluation_of_a_corrupt_checkpoint_is_a_one_line_error(places, tmp_path, capsys) -> None:
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"\x80\x02 definitely not a checkpoint")
    code, line = _one_line_error(lambda: evaluate.main(["--checkpoint", str(bad), "--data", "shards",
                                                        "--out", "report"]), capsys)
    assert code == 1 and line.startswith(f"python -m nima_train.evaluate: {bad} is not a readable checkpoint (")
