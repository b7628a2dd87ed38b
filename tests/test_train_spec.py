"""One spec per training run (nima_train/settings.TrainSettings): the command line, the training assets' config, the
run key and the model card all take its fields and defaults from it, and docs/training.md shows the table it
generates. Also: no head-only phase on random weights unless asked (tests/test_layout.py keeps functions short)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import dagster as dg
import pytest

from assets.train_config import TrainConfig
from assets.training import config_for
from nima_train.chain import CHAIN
from nima_train.runs import TrainingRun, hyperparameters, publish_model, run_key, train_command
from nima_train.settings import TrainSettings, field_names, markdown_table
from nima_train.train import NOT_IDENTITY, get_args_parser, main, parse_args
from tests.helpers.tiny_training import tiny_args, write_tiny_shards

ROOT = Path(__file__).resolve().parents[1]
START, END = "<!-- train-spec:start -->", "<!-- train-spec:end -->"


def _flags() -> dict[str, object]:
    return {a.dest: a for a in get_args_parser()._actions if a.option_strings and a.dest != "help"}


def test_every_flag_of_the_trainer_is_in_the_spec_or_says_why_it_is_not_identity():
    flags, spec = _flags(), set(field_names())
    unexplained = set(flags) - spec - set(NOT_IDENTITY)
    assert not unexplained, f"flags neither in TrainSettings nor in NOT_IDENTITY (with a reason): {unexplained}"
    assert not spec & set(NOT_IDENTITY), "a spec field cannot also be outside the identity"
    assert set(NOT_IDENTITY) <= set(flags), f"NOT_IDENTITY names no flag: {set(NOT_IDENTITY) - set(flags)}"
    assert spec <= set(flags), f"spec fields without a flag: {spec - set(flags)}"
    assert all(len(reason) > 10 for reason in NOT_IDENTITY.values())


def test_the_flags_defaults_and_the_configs_defaults_are_the_specs():
    flags, spec = _flags(), TrainSettings()
    assert {name: flags[name].default for name in field_names()} == dataclasses.asdict(spec)
    assert TrainConfig().spec() == spec  # the demo's defaults, once
    names = set(TrainConfig.model_fields)
    assert names - set(field_names()) == {"nproc", "device", "allow_pipe", "launch"}


def test_the_chain_configs_change_only_their_own_rows_defaults():
    for model in CHAIN:
        cls = config_for(model)
        changed = {k: v for k, v in dataclasses.asdict(cls().spec()).items() if v != getattr(TrainSettings(), k)}
        row = {"epochs_full": model.epochs, "lr_scale": model.lr_scale, "negatives": model.negatives}
        assert changed == {k: v for k, v in row.items() if v != getattr(TrainSettings(), k)}, cls.__name__
        assert set(cls.model_fields) == set(TrainConfig.model_fields)


def _run(tmp_path: Path) -> TrainingRun:
    for split in ("train", "val"):
        (tmp_path / split).mkdir(parents=True, exist_ok=True)
        (tmp_path / split / "index.json").write_text(json.dumps({"nsamples": 0, "shardlist": []}))
    return TrainingRun("nima_ava", [tmp_path / "train"], [tmp_path / "val"])


# A value other than the default for every spec field (the test below fails when a field is added without one).
OTHER = {"backbone": "resnet50", "weights": "imagenet", "dropout": 0.5, "loss": "notebook", "opt": "sgd",
         "epochs_head": 2, "epochs_full": 3, "lr_head": 0.01, "lr_full": 0.02, "head_lr_mult": 3.0, "lr_scale": 0.5,
         "lr_decay": 0.9, "weight_decay": 1e-4, "batch_size": 8, "crop": 64, "resize": 72, "workers": 3,
         "shuffle_buffer": 10, "negatives": 0.2, "max_steps": 5, "seed": 7, "amp": True}


def test_every_spec_field_changes_the_run_key_and_what_the_card_records(tmp_path):
    assert set(OTHER) == set(field_names())
    run = _run(tmp_path)
    base = hyperparameters(TrainSettings())
    keys = {run_key(run, base)}
    for name, value in OTHER.items():
        hp = hyperparameters(dataclasses.replace(TrainSettings(), **{name: value}))
        assert hp[name] == value and hp != base
        keys.add(run_key(run, hp))
    keys.add(run_key(run, hyperparameters(TrainSettings(), nproc=2)))  # the effective batch doubles
    assert len(keys) == len(OTHER) + 2
    assert TrainConfig(dropout=0.5, seed=7).hyperparameters() != TrainConfig().hyperparameters()


def test_the_model_card_records_and_hashes_the_whole_resolved_spec(tmp_path):
    import hashlib

    run, hp = _run(tmp_path), hyperparameters(TrainSettings(seed=3), nproc=2)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "model.pt").write_bytes(b"weights")
    card = publish_model(run, hp, tmp_path / "out", {"final": {}}, tmp_path / "models", str).card
    assert card["hyperparameters"] == {**dataclasses.asdict(TrainSettings(seed=3).resolved()), "nproc": 2}
    assert card["hyperparameters_sha256"] == hashlib.sha256(json.dumps(hp, sort_keys=True).encode()).hexdigest()


def test_an_unset_rate_resolves_to_the_optimisers_and_the_key_hashes_the_resolved_value(tmp_path):
    run = _run(tmp_path)
    unset, given = TrainSettings(), TrainSettings(lr_head=1e-3, lr_full=1e-3, head_lr_mult=1.0)
    assert run_key(run, hyperparameters(unset)) == run_key(run, hyperparameters(given))
    assert TrainSettings(opt="sgd").resolved().lr_full == 3e-7


def test_the_launched_command_gives_the_trainer_exactly_the_spec(tmp_path):
    run = _run(tmp_path)
    for spec in (TrainSettings(), TrainSettings(**{**OTHER, "weights": "none"}), TrainSettings(amp=False)):
        command = train_command(run, hyperparameters(spec), tmp_path / "out", device="cpu")
        args = parse_args(command[command.index("nima_train.train") + 1:])
        assert TrainSettings.from_mapping(vars(args)) == spec.resolved()
        assert args.device == "cpu" and args.no_progress


def test_a_spec_refuses_a_choice_it_does_not_offer():
    with pytest.raises(ValueError, match="opt must be one of adam, sgd, got 'rmsprop'"):
        TrainSettings(opt="rmsprop")
    with pytest.raises(ValueError, match="both 0"):
        TrainSettings(epochs_full=0)


def test_training_docs_show_the_table_the_spec_generates():
    text = (ROOT / "docs" / "training.md").read_text()
    assert START in text and END in text, f"docs/training.md lacks the {START} ... {END} section"
    listed = text.split(START, 1)[1].split(END, 1)[0].strip()
    assert listed == markdown_table(), "docs/training.md's spec table differs from the code; now:\n" + markdown_table()


def test_without_pretrained_weights_no_head_only_phase_runs_unless_asked_and_then_with_a_warning(tmp_path, capsys):
    assert TrainSettings().weights == "none" and TrainSettings().epochs_head == 0
    write_tiny_shards(tmp_path / "train", 8)
    summary = main(get_args_parser().parse_args(tiny_args(tmp_path / "train", tmp_path / "default",
                                                          "--epochs-full", "1")))
    assert [h["phase"] for h in summary["history"]] == ["full"]
    assert "warning" not in capsys.readouterr().out
    summary = main(get_args_parser().parse_args(tiny_args(tmp_path / "train", tmp_path / "asked", "--epochs-head",
                                                          "1", "--epochs-full", "0")))
    assert [h["phase"] for h in summary["history"]] == ["head"]
    assert "warning: --epochs-head 1 with --weights none trains the head alone" in capsys.readouterr().out


def test_an_old_run_config_with_launch_settings_at_the_top_level_is_refused():
    from pipelines.definitions import defs

    job = defs.resolve_job_def("training_job")
    new = {"ops": {name: {"config": {"launch": {"launcher": "subprocess"}}} for name in ("nima_ava", "nima_sac")}}
    assert dg.validate_run_config(job, new)
    with pytest.raises(dg.DagsterInvalidConfigError, match="launcher"):
        dg.validate_run_config(job, {"ops": {"nima_ava": {"config": {"launcher": "subprocess"}}}})
