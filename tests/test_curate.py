"""`aesthetic curate` on real shards: scores Parquet, manifest, kept shards, re-runs, failures, torchrun."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import duckdb
import numpy as np
import pytest
import webdataset as wds
from PIL import Image

from cli.main import main
from critic.curate import CurateSettings, curate, input_shards
from critic.scoring import Critic
from nima_train.data import ShardURLRefused
from nima_train.tarstream import tar_samples
from tests.helpers.critic_models import picture, register_model, stretching_calibration
from tests.helpers.http import quiet_file_server, serving

ROOT = Path(__file__).resolve().parents[1]
# The test model's features barely tell pictures apart (untrained): a low cosine threshold lets the hash decide.
LOOSE = ["--similarity", "0.5", "--max-hamming", "6"]


def _encoded(img: Image.Image, fmt: str = "JPEG", **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def _write_tar(path: Path, samples: list[dict]) -> Path:
    with wds.TarWriter(str(path)) as sink:
        for s in samples:
            sink.write(s)
    return path


def write_corpus(folder: Path) -> dict[str, Path]:
    """Two shards: distinct pictures, a resized re-encoded copy across shards, a key repeated in a shard and
    across shards, a key with a slash, PNG and WebP images, a corrupt image and a sample without one."""
    folder.mkdir(parents=True, exist_ok=True)
    a = [{"__key__": f"p{i}", "jpg": _encoded(picture(i, 256), quality=90), "txt": f"caption {i}".encode()}
         for i in range(6)]
    a += [
        {"__key__": "dir/p6", "jpg": _encoded(picture(6, 256), quality=90)},
        {"__key__": "png1", "png": _encoded(picture(7, 200), "PNG")},
        {"__key__": "webp1", "webp": _encoded(picture(8, 300), "WEBP", quality=90)},
        {"__key__": "bad", "jpg": b"this is not an image at all"},
        {"__key__": "truncated", "jpg": _encoded(picture(9, 256), quality=90)[:400]},
        {"__key__": "noimg", "txt": b"just words"},
        {"__key__": "p0", "jpg": _encoded(picture(30, 256), quality=90)},  # a repeated key, another picture
    ]
    b = [
        {"__key__": "p0", "jpg": _encoded(picture(31, 256), quality=90)},  # the key again, in another shard
        {"__key__": "copy_of_p1",
         "jpg": _encoded(picture(1, 256).resize((200, 200), Image.Resampling.BICUBIC), quality=70)},
        *({"__key__": f"q{i}", "jpg": _encoded(picture(10 + i, 256), quality=90)} for i in range(4)),
    ]
    return {"a": _write_tar(folder / "a.tar", a), "b": _write_tar(folder / "b.tar", b)}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("curate")
    home = root / "home"
    home.mkdir()
    version = register_model(home, crop=96, resize=108)
    return {"root": root, "home": home, "version": version, **write_corpus(root / "in")}


@pytest.fixture(scope="module")
def curated(corpus: dict) -> Path:
    """One run over both shards (0 workers), shared by the tests that only read its output."""
    out = corpus["root"] / "curated"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AESTHETIC_HOME", str(corpus["home"]))
        assert main(["curate", str(corpus["a"]), str(corpus["b"]), "--out", str(out), "--workers", "0", *LOOSE]) == 0
    return out


def _run(corpus: dict, monkeypatch, out: Path, *extra: str, shards: list[Path] | None = None) -> int:
    monkeypatch.setenv("AESTHETIC_HOME", str(corpus["home"]))
    refs = [str(p) for p in (shards or [corpus["a"], corpus["b"]])]
    return main(["curate", *refs, "--out", str(out), "--workers", "0", *extra])


def _manifest(out: Path) -> dict[str, tuple]:
    rows = duckdb.sql(f"SELECT key, shard, decision, duplicate_of, reason, source_key "
                      f"FROM '{out}/manifest.parquet'").fetchall()
    return {r[0]: r[1:] for r in rows}


def test_every_sample_gets_scores_and_a_decision(corpus, curated) -> None:
    out = curated
    scores = duckdb.sql(f"SELECT key, source_key, shard, mean, std, histogram, phash, features, error "
                        f"FROM '{out}/scores/*.parquet' ORDER BY shard, key").fetchall()
    assert len(scores) == 19 and len(list((out / "scores").glob("*.parquet"))) == 2
    columns = {c[0]: c[1] for c in duckdb.sql(f"DESCRIBE SELECT * FROM '{out}/scores/*.parquet'").fetchall()}
    assert columns["phash"] == "UBIGINT" and columns["features"] == "FLOAT[]" and "calibrated_mean" not in columns
    for key, _, _, mean, std, hist, phash, feats, error in scores:
        assert "/" not in key and "." not in key
        if error is None:
            assert 1 <= mean <= 10 and std > 0 and len(hist) == 10 and sum(hist) == pytest.approx(1, abs=1e-4)
            assert 0 <= phash < 2**64 and len(feats) == 1280
        else:
            assert mean is None and phash is None and feats is None
    manifest = _manifest(out)
    assert len(manifest) == 19
    assert manifest["dir%2Fp6"][4] == "dir/p6"
    # p0 of shard a, then its repeat in a, then shard b's p0: unique keys in that order
    assert [manifest[k][4] for k in ("p0", "p0-2", "p0-3")] == ["p0", "p0", "p0"]
    assert manifest["p0-3"][0].endswith("b.tar")
    assert manifest["bad"][1:4:2] == ("unreadable", "not an image: image is not a format Pillow reads")
    assert manifest["truncated"][1] == "unreadable" and manifest["truncated"][3].startswith("corrupt:")
    assert manifest["noimg"][1] == "unreadable" and manifest["noimg"][3].startswith("no image:")
    assert {k for k, r in manifest.items() if r[1] == "duplicate"} in ({"p1"}, {"copy_of_p1"})
    loser = "p1" if manifest["p1"][1] == "duplicate" else "copy_of_p1"
    winner = ({"p1", "copy_of_p1"} - {loser}).pop()
    assert manifest[loser][2] == winner and manifest[winner][1] == "kept"
    assert manifest["png1"][1] == manifest["webp1"][1] == "kept"
    kept = {k for k, r in manifest.items() if r[1] == "kept"}
    assert len(kept) == 15
    written = {}
    for tar in sorted((out / "shards").glob("*.tar")):
        for sample in tar_samples([{"url": str(tar)}]):
            written[sample["__key__"]] = {k: bytes(v) for k, v in sample.items() if not k.startswith("__")}
    assert set(written) == kept
    originals = {s["__key__"]: s for s in tar_samples([{"url": str(corpus["a"])}])}
    assert written["p2"] == {"jpg": bytes(originals["p2"]["jpg"]), "txt": b"caption 2"}
    index = json.loads((out / "shards" / "index.json").read_text())
    assert index["nsamples"] == 15 and sum(e["nsamples"] for e in index["shardlist"]) == 15


def test_scores_match_the_critic_on_the_same_pictures(corpus, curated) -> None:
    got = dict(duckdb.sql(f"SELECT source_key, mean FROM '{curated}/scores/*.parquet' "
                          f"WHERE shard = '{corpus['b']}'").fetchall())
    critic = Critic.from_checkpoint(next((corpus["home"] / "models").rglob("model.pt")))
    samples = {s["__key__"]: bytes(s["jpg"]) for s in tar_samples([{"url": str(corpus["b"])}])}
    from critic.scoring import decode_image

    expected = critic.score_images([decode_image(samples[k]) for k in sorted(samples)]).mean.tolist()
    # the same crop and model input, resampled by torch here and by Pillow in `aesthetic score`
    assert [got[k] for k in sorted(samples)] == pytest.approx(expected, abs=0.02)


def test_min_score_applies_to_the_calibrated_mean(tmp_path, monkeypatch) -> None:
    home = tmp_path / "home"
    home.mkdir()
    register_model(home, crop=96, resize=108, calibration=stretching_calibration())
    shards = write_corpus(tmp_path / "in")
    monkeypatch.setenv("AESTHETIC_HOME", str(home))
    probe = tmp_path / "probe"
    assert main(["curate", str(shards["b"]), "--out", str(probe), "--workers", "0", "--no-dedupe"]) == 0
    calibrated = dict(duckdb.sql(f"SELECT key, calibrated_mean FROM '{probe}/scores/*.parquet'").fetchall())
    raw = dict(duckdb.sql(f"SELECT key, mean FROM '{probe}/scores/*.parquet'").fetchall())
    assert all(0 <= p <= 100 for (p,) in duckdb.sql(f"SELECT percentile FROM '{probe}/scores/*.parquet'").fetchall())
    values = sorted(calibrated.values())
    cut = (values[2] + values[3]) / 2
    assert any((raw[k] >= cut) != (calibrated[k] >= cut) for k in raw)  # the choice of score matters here
    out = tmp_path / "out"
    assert main(["curate", str(shards["b"]), "--out", str(out), "--workers", "0", "--no-dedupe",
                 "--min-score", f"{cut}"]) == 0
    for key, (_, decision, _, reason, _) in _manifest(out).items():
        assert decision == ("kept" if calibrated[key] >= cut else "low_score"), key
        assert reason.startswith("calibrated mean")


def test_rerun_skips_done_shards_and_rescores_changed_input_or_a_new_model(tmp_path, monkeypatch) -> None:
    home = tmp_path / "home"
    home.mkdir()
    register_model(home, crop=96, resize=108)
    shards = write_corpus(tmp_path / "in")
    monkeypatch.setenv("AESTHETIC_HOME", str(home))
    out = tmp_path / "out"
    refs = [str(shards["a"]), str(shards["b"])]
    critic = Critic.from_checkpoint(next((home / "models").rglob("model.pt")), version="v1")
    first = curate(critic, refs, out, CurateSettings(workers=0))
    assert len(first.scored) == 2 and not first.skipped
    before = {p.name: p.stat().st_mtime_ns for p in (out / "scores").iterdir()}
    again = curate(critic, refs, out, CurateSettings(workers=0))
    assert again.scored == [] and sorted(again.skipped) == sorted(first.scored)
    assert {p.name: p.stat().st_mtime_ns for p in (out / "scores").iterdir()} == before
    _write_tar(shards["b"], [{"__key__": "only", "jpg": _encoded(picture(40, 256))}])  # the same name, new content
    changed = curate(critic, refs, out, CurateSettings(workers=0))
    assert changed.scored == [str(shards["b"])] and changed.skipped == [str(shards["a"])]
    assert changed.outcome.counts["kept"] == 11  # 10 readable in a, 1 in b
    new_model = Critic.from_checkpoint(next((home / "models").rglob("model.pt")), version="v2")
    assert sorted(curate(new_model, refs, out, CurateSettings(workers=0)).scored) == sorted(refs)


def test_same_input_and_model_give_byte_identical_outputs_with_any_worker_count(corpus, curated, monkeypatch,
                                                                                tmp_path) -> None:
    one, two = curated, tmp_path / "two"
    monkeypatch.setenv("AESTHETIC_HOME", str(corpus["home"]))
    assert main(["curate", str(corpus["a"]), str(corpus["b"]), "--out", str(two), "--workers", "2", *LOOSE]) == 0
    assert (one / "manifest.parquet").read_bytes() == (two / "manifest.parquet").read_bytes()
    tars = sorted(p.name for p in (one / "shards").iterdir())
    assert tars == sorted(p.name for p in (two / "shards").iterdir()) and len(tars) == 3  # 2 tars + index.json
    for name in tars:
        assert (one / "shards" / name).read_bytes() == (two / "shards" / name).read_bytes(), name


def test_a_shard_that_cannot_be_opened_fails_alone_and_a_rerun_retries_only_it(corpus, monkeypatch, tmp_path,
                                                                               capsys) -> None:
    broken = tmp_path / "broken.tar"
    broken.write_bytes(os.urandom(3000))
    missing = tmp_path / "missing.tar"
    out = tmp_path / "out"
    shards = [corpus["a"], broken, missing, corpus["b"]]
    assert _run(corpus, monkeypatch, out, *LOOSE, shards=shards) == 1
    err = capsys.readouterr().err
    assert f"2 of 4 shards failed: {broken} (TarFormatError: {broken}: bad tar header checksum" in err
    assert f"{missing} (missing: {missing} does not exist)" in err
    assert len(list((out / "scores").glob("*.parquet"))) == 2
    assert not (out / "manifest.parquet").exists() and not (out / "shards").exists()
    assert sorted(json.loads((out / "failed.json").read_text())) == sorted([str(broken), str(missing)])
    assert not [p for p in out.rglob("*") if p.name.startswith(".")]  # no temporary left behind
    _write_tar(broken, [{"__key__": "fixed", "jpg": _encoded(picture(50, 256))}])
    _write_tar(missing, [{"__key__": "found", "png": _encoded(picture(51, 128), "PNG")}])
    assert _run(corpus, monkeypatch, out, *LOOSE, shards=shards) == 0
    assert "4 shards: 2 scored, 2 already scored" in capsys.readouterr().err  # the two fixed ones only
    manifest = _manifest(out)
    assert manifest["fixed"][1] == manifest["found"][1] == "kept" and len(manifest) == 21
    assert not (out / "failed.json").exists()


def test_a_fifo_named_like_a_shard_fails_without_blocking(corpus, monkeypatch, tmp_path, capsys) -> None:
    fifo = tmp_path / "fifo.tar"
    os.mkfifo(fifo)
    assert _run(corpus, monkeypatch, tmp_path / "out", shards=[fifo, corpus["b"]]) == 1
    assert f"not a regular file: {fifo} is a FIFO (named pipe)" in capsys.readouterr().err


def test_pipe_urls_need_allow_pipe_and_http_shards_are_read(corpus, monkeypatch, tmp_path, capsys) -> None:
    pipe = f"pipe:cat {corpus['b']}"
    monkeypatch.setenv("AESTHETIC_HOME", str(corpus["home"]))
    with pytest.raises(SystemExit, match="refusing shard URL 'pipe:cat .*pass --allow-pipe"):
        main(["curate", pipe, "--out", str(tmp_path / "refused"), "--workers", "0"])
    assert not (tmp_path / "refused").exists()
    with pytest.raises(ShardURLRefused):
        input_shards([pipe])
    assert main(["curate", pipe, "--out", str(tmp_path / "piped"), "--workers", "0", "--allow-pipe"]) == 0
    served = tmp_path / "served"
    served.mkdir()
    (served / "b.tar").write_bytes(corpus["b"].read_bytes())
    (served / "index.json").write_text(json.dumps({"nsamples": 6, "shardlist": [{"url": "b.tar", "nsamples": 6}]}))
    with serving(quiet_file_server(served)) as server:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        assert main(["curate", f"{url}/b.tar", f"{url}/", "--out", str(tmp_path / "http"), "--workers", "0"]) == 0
    for out in ("piped", "http"):
        manifest = _manifest(tmp_path / out)
        assert {r[4] for r in manifest.values()} == {"p0", "copy_of_p1", "q0", "q1", "q2", "q3"}
    shards = {r[0] for r in _manifest(tmp_path / "http").values()}
    assert shards == {f"{url}/b.tar"}  # the same URL given twice (directly and by the index) is one shard twice
    capsys.readouterr()


def test_two_gloo_ranks_under_torchrun_match_one_process(corpus, tmp_path) -> None:
    extra = tmp_path / "in"
    shards = [str(corpus["a"]), str(corpus["b"]),
              *map(str, write_corpus(extra).values())]  # four shards, two per rank
    one, two = tmp_path / "one", tmp_path / "two"
    env = {**os.environ, "AESTHETIC_HOME": str(corpus["home"]), "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    args = ["curate", *shards, "--workers", "1", "--device", "cpu", *LOOSE]
    single = subprocess.run([sys.executable, "-m", "cli", *args, "--out", str(one)], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=300)
    assert single.returncode == 0, single.stderr[-3000:]
    ranks = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes=1",
                            "--nproc-per-node=2", "-m", "cli", *args, "--out", str(two)],
                           cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert ranks.returncode == 0, ranks.stderr[-3000:]
    per_rank = {}
    for path in sorted((two / "scores").glob("*.parquet")):
        per_rank[path.name] = json.loads(duckdb.sql(f"SELECT * FROM parquet_kv_metadata('{path}')")
                                         .fetchall()[0][2])["shard"]
    assert sorted(per_rank.values()) == sorted(shards)
    query = ("SELECT shard, key, mean, std, histogram, phash FROM '{}/scores/*.parquet' "
             "WHERE error IS NULL ORDER BY shard, key")
    a = duckdb.sql(query.format(one)).fetchall()
    b = duckdb.sql(query.format(two)).fetchall()
    assert [r[:2] for r in a] == [r[:2] for r in b] and len(a) == 2 * 16
    assert np.allclose([r[2:4] + tuple(r[4]) for r in a], [r[2:4] + tuple(r[4]) for r in b], atol=1e-5)
    assert [r[5] for r in a] == [r[5] for r in b]
    decisions = "SELECT key, shard, decision, duplicate_of FROM '{}/manifest.parquet' ORDER BY key"
    assert duckdb.sql(decisions.format(one)).fetchall() == duckdb.sql(decisions.format(two)).fetchall()


# ------------------------------------------------------------------ what a run may delete, lock, keys, member names


def _small_shard(path: Path, seeds: range, prefix: str) -> Path:
    return _write_tar(path, [{"__key__": f"{prefix}{s}", "jpg": _encoded(picture(s, 256), quality=90)} for s in seeds])


def _webdataset_keys(folder: Path) -> set[str]:
    tars = sorted(str(p) for p in folder.glob("*.tar"))
    return {s["__key__"] for s in wds.WebDataset(tars, shardshuffle=False)} if tars else set()


def _bytes_of(paths: list[Path]) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in paths}


def test_curate_leaves_alone_every_tar_in_its_shards_folder_that_it_did_not_write(corpus, monkeypatch,
                                                                                  tmp_path) -> None:
    root = tmp_path / "C"
    (root / "shards").mkdir(parents=True)
    inputs = [_small_shard(root / "shards" / "part-000.tar", range(60, 63), "x"),
              _small_shard(root / "shards" / "part-001.tar", range(63, 66), "y")]
    unrelated = _write_tar(root / "shards" / "unrelated-dataset.tar", [{"__key__": "other", "txt": b"not ours"}])
    before = _bytes_of([*inputs, unrelated])
    assert _run(corpus, monkeypatch, root, "--no-dedupe", shards=inputs) == 0
    assert _bytes_of([*inputs, unrelated]) == before
    index = json.loads((root / "shards" / "index.json").read_text())
    written = [root / "shards" / e["url"] for e in index["shardlist"]]
    assert len(written) == 2 and not set(written) & set(before)
    assert {s["__key__"] for s in wds.WebDataset([str(p) for p in written], shardshuffle=False)} == \
        {"x60", "x61", "x62", "y63", "y64", "y65"}
    # a re-run that keeps nothing deletes the tars the first run wrote, and only those
    assert _run(corpus, monkeypatch, root, "--no-dedupe", "--min-score", "10", shards=inputs) == 0
    assert not any(p.exists() for p in written)
    assert _bytes_of([*inputs, unrelated]) == before
    assert sorted(p.name for p in (root / "shards").iterdir()) == ["index.json", "part-000.tar", "part-001.tar",
                                                                  "unrelated-dataset.tar"]


def test_curate_refuses_before_any_work_to_replace_a_file_it_did_not_write(corpus, monkeypatch, tmp_path,
                                                                          capsys) -> None:
    root = tmp_path / "C"
    (root / "shards").mkdir(parents=True)
    foreign_index = root / "shards" / "index.json"
    foreign_index.write_text('{"shardlist": [{"url": "data.tar"}], "nsamples": 1}\n')
    shard = _small_shard(tmp_path / "in.tar", range(70, 72), "z")
    with pytest.raises(SystemExit) as refused:
        _run(corpus, monkeypatch, root, shards=[shard])
    message = str(refused.value)
    assert message.startswith("aesthetic curate: ") and "\n" not in message
    assert str(foreign_index) in message and "not written by curate" in message
    assert foreign_index.read_text() == '{"shardlist": [{"url": "data.tar"}], "nsamples": 1}\n'
    assert not (root / "scores").exists() and not (root / "manifest.parquet").exists()
    foreign_manifest = tmp_path / "M"
    foreign_manifest.mkdir()
    (foreign_manifest / "manifest.parquet").write_bytes(b"someone else's manifest")
    with pytest.raises(SystemExit, match=r"manifest\.parquet .*not written by curate"):
        _run(corpus, monkeypatch, foreign_manifest, shards=[shard])
    assert (foreign_manifest / "manifest.parquet").read_bytes() == b"someone else's manifest"
    capsys.readouterr()


def test_an_input_in_the_output_shards_folder_that_the_run_would_replace_is_refused(corpus, monkeypatch,
                                                                                    tmp_path) -> None:
    out = tmp_path / "D"
    shard = _small_shard(tmp_path / "in.tar", range(80, 83), "w")
    assert _run(corpus, monkeypatch, out, "--no-dedupe", shards=[shard]) == 0
    (own,) = sorted((out / "shards").glob("*.tar"))
    scores_before = sorted((out / "scores").iterdir())
    before = own.read_bytes()
    # own is also what in.tar's output is named: this run would overwrite its own input
    for refs in ([shard, own], [own], [out / "shards"]):
        with pytest.raises(SystemExit) as refused:
            _run(corpus, monkeypatch, out, "--no-dedupe", shards=refs)
        message = str(refused.value)
        assert "\n" not in message and f"{out / 'shards'}" in message and "would replace or delete" in message
        assert own.read_bytes() == before and sorted((out / "scores").iterdir()) == scores_before
    assert _webdataset_keys(out / "shards") == {"w80", "w81", "w82"}


def test_a_member_name_that_is_not_utf8_rejects_its_sample_and_the_shard_goes_on(corpus, monkeypatch,
                                                                                 tmp_path) -> None:
    import tarfile

    shard = tmp_path / "latin1.tar"
    members = [("good1.jpg", _encoded(picture(90, 256), quality=90)),
               ("caf\udce9.jpg", _encoded(picture(91, 256), quality=90)),  # b"caf\xe9.jpg" on disk
               ("good2.jpg", _encoded(picture(92, 256), quality=90)),
               ("good2.t\udcffxt", b"a caption"),  # the sample's image is fine, another member's name is not
               ("good3.jpg", _encoded(picture(93, 256), quality=90))]
    with tarfile.open(shard, "w", format=tarfile.GNU_FORMAT, encoding="utf-8", errors="surrogateescape") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    assert b"caf\xe9.jpg" in shard.read_bytes()
    out = tmp_path / "out"
    assert _run(corpus, monkeypatch, out, "--no-dedupe", shards=[shard]) == 0
    manifest = _manifest(out)
    assert manifest["caf%E9"][1:4:2] == ("unreadable", "member name is not UTF-8: b'caf\\xe9.jpg'")
    assert manifest["caf%E9"][4] == "caf\\xe9"
    assert manifest["good2"][1:4:2] == ("unreadable", "member name is not UTF-8: b'good2.t\\xffxt'")
    assert manifest["good1"][1] == manifest["good3"][1] == "kept"
    assert _webdataset_keys(out / "shards") == {"good1", "good3"}


def _traced_lines(fn, *args) -> tuple[object, int]:
    """fn(*args) and how many lines of critic/curate.py ran meanwhile (the work its helpers do)."""
    import critic.curate as module

    count = 0

    def tracer(frame, event, arg):
        nonlocal count
        if frame.f_code.co_filename != module.__file__:
            return None
        if event == "line":
            count += 1
        return tracer

    sys.settrace(tracer)
    try:
        value = fn(*args)
    finally:
        sys.settrace(None)
    return value, count


def test_repeated_keys_get_the_same_suffixes_with_work_linear_in_the_repeats(tmp_path) -> None:
    import pyarrow as pa

    from critic.curate import _corpus_keys, keyed_samples

    n = 1500
    # repeats of k apart from each other (consecutive members with one key are one sample), and k-3 taken verbatim
    keys = ["k", "k-3", *(k for i in range(n) for k in ("k", f"s{i}")), "k-3", "j"]
    shard = _write_tar(tmp_path / "repeats.tar", [{"__key__": k, "txt": b"."} for k in keys])
    # the first free suffix, in input order (a key already taken verbatim is skipped), as before
    repeats = ["k-2", *(f"k-{i}" for i in range(4, n + 3))]
    expected = ["k", "k-3", *(k for i in range(n) for k in (repeats[i], f"s{i}")), "k-3-2", "j"]
    names, lines = _traced_lines(lambda: [k for k, _ in keyed_samples(tar_samples([{"url": str(shard)}]))])
    assert names == expected
    assert lines < 20 * len(keys)  # a search from -2 for every repeat would run about n * n / 2 lines
    names, lines = _traced_lines(_corpus_keys, [pa.table({"key": keys}), pa.table({"key": ["k", "k-3-2"]})])
    assert names == [*expected, f"k-{n + 3}", "k-3-2-2"] and lines < 20 * len(keys)


def test_a_second_run_on_a_locked_output_folder_fails_at_once_naming_the_holder(corpus, monkeypatch,
                                                                               tmp_path) -> None:
    out = tmp_path / "out"
    shard = _small_shard(tmp_path / "in.tar", range(95, 97), "v")
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys; from pathlib import Path; from critic.curate_output import output_lock\n"
         "with output_lock(Path(sys.argv[1])):\n    print('held', flush=True); sys.stdin.read()", str(out)],
        cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "held\n"  # the other run holds the folder from here until stdin closes
        with pytest.raises(SystemExit) as busy:
            _run(corpus, monkeypatch, out, shards=[shard])
        message = str(busy.value)
        assert message.startswith(f"aesthetic curate: {out} is in use by another curate run (pid {holder.pid} on ")
        assert "\n" not in message
        assert sorted(p.name for p in out.iterdir()) == ["curate.lock"]  # no work was done
    finally:
        holder.stdin.close()
        holder.wait(timeout=60)
    assert holder.returncode == 0
    assert _run(corpus, monkeypatch, out, shards=[shard]) == 0
    assert _webdataset_keys(out / "shards") == {"v95", "v96"}


def test_an_output_folder_from_before_the_ownership_list_is_refused_with_one_line_and_left_as_it_was(
        corpus, monkeypatch, tmp_path) -> None:
    import pyarrow.parquet as pq

    out = tmp_path / "out"
    first = _small_shard(tmp_path / "first.tar", range(100, 102), "f")
    assert _run(corpus, monkeypatch, out, "--no-dedupe", shards=[first]) == 0
    manifest = pq.read_table(out / "manifest.parquet")
    meta = json.loads(manifest.schema.metadata[b"curation"])
    del meta["owns"]  # what curate wrote before 0.1's redesign
    pq.write_table(manifest.replace_schema_metadata({"curation": json.dumps(meta)}), out / "manifest.parquet")
    before = _bytes_of(sorted(p for p in out.rglob("*") if p.is_file() and p.name != "curate.lock"))
    second = _small_shard(tmp_path / "second.tar", range(102, 104), "s")
    with pytest.raises(SystemExit) as refused:
        _run(corpus, monkeypatch, out, "--no-dedupe", shards=[second])
    message = str(refused.value)
    assert message.startswith("aesthetic curate: ") and "\n" not in message
    assert str(out / "manifest.parquet") in message and "choose a new --out or remove" in message
    assert _bytes_of(sorted(p for p in out.rglob("*") if p.is_file() and p.name != "curate.lock")) == before
