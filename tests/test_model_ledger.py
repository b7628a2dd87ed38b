"""The warehouse across hosts (issue 29, points 3 and 4): in the two-host shape the training host writes no
warehouse rows; its model rows go to the model ledger on the shared volume and the data host records them, in
order and once. Every model records where it trained, and none of that is part of its identity."""

from __future__ import annotations

import json
import shutil

import dagster as dg
import pytest
import torch

from assets.chain import build_chain
from pipelines.model_ledger import model_ledger_sensor, record_models
from pipelines.resources import build_resources
from tests.helpers.tiny_training import write_tiny_shards
from warehouse.db import connect
from warehouse.ledger import LedgerError, event_numbers, event_path, ledger_connection, record_ledger
from warehouse.models import ModelRow, TrainedOn, get_model, record_model, set_alias
from warehouse.models_lookup import current_model

TINY = {"weights": "none", "epochs_full": 1, "batch_size": 8, "crop": 32, "resize": 36, "workers": 0, "device": "cpu"}
CHAIN = build_chain()


def _row(version: str, name: str = "nima_ava", worker: str = "w") -> ModelRow:
    return ModelRow(version, name, None, f"models/{name}/{version}/model.pt", version * 4, {"n": 1},
                    TrainedOn(worker=worker, device="cpu"))


def test_the_training_location_writes_no_warehouse_rows_and_the_data_location_records_its_models(tmp_path,
                                                                                                  monkeypatch):
    home = tmp_path / "home"
    for split, n, seed in (("train", 16, 0), ("val", 8, 1), ("test", 8, 2)):
        write_tiny_shards(home / "shards" / "ava" / split, n, seed=seed, split=split)
    monkeypatch.setenv("AESTHETIC_WORKER", "gpu-a")
    training = build_resources(home=home, raw=tmp_path / "raw", ledger=True)
    run_config = {"ops": {"nima_ava": {"config": TINY}}}
    first = dg.materialize([CHAIN["nima_ava"], CHAIN["eval_nima_ava"]], resources=training, run_config=run_config,
                           instance=dg.DagsterInstance.ephemeral())
    assert first.success
    assert not (home / "warehouse.duckdb").exists(), "the training host opened the warehouse"
    meta = first.asset_materializations_for_node("nima_ava")[0].metadata
    version = meta["version"].value
    assert (meta["worker"].value, meta["device"].value, meta["code_location"].value) == ("gpu-a", "cpu", "")
    card = json.loads((home / "models" / "nima_ava" / version / "model_card.json").read_text())
    assert card["trained_on"]["worker"] == "gpu-a" and card["trained_on"]["torch_version"]
    assert event_numbers(home / "ledger") == [1, 2]  # the model and its alias, then the evaluation report

    # Where it trained is not what it computed: model.pt (whose sha256 is the version) keeps no device, and the
    # same run launched from another worker has the same run folder (it resumes), recorded with the new worker.
    stored_args = torch.load(home / "models" / "nima_ava" / version / "model.pt", weights_only=True)["args"]
    assert "device" not in stored_args and "gpu-a" not in json.dumps(stored_args)
    monkeypatch.setenv("AESTHETIC_WORKER", "gpu-b")
    again = dg.materialize([CHAIN["nima_ava"]], resources=training, run_config=run_config,
                           instance=dg.DagsterInstance.ephemeral())
    again_meta = again.asset_materializations_for_node("nima_ava")[0].metadata
    assert again_meta["run_dir"].value == meta["run_dir"].value and again_meta["worker"].value == "gpu-b"
    evaluated, version = version, again_meta["version"].value

    data = build_resources(home=home, raw=tmp_path / "raw")
    assert record_models.execute_in_process(resources=data).success
    with connect(home / "warehouse.duckdb", read_only=True) as conn:
        row = current_model(conn, "nima_ava")
        assert row.version == version and row.trained_on.worker == "gpu-b" and row.trained_on.device == "cpu"
        assert conn.execute("SELECT model_version, n FROM eval_reports").fetchall() == [(evaluated, 8)]
        assert conn.execute("SELECT seq FROM ledger_events ORDER BY seq").fetchall() == [(1,), (2,), (3,)]
    assert record_models.execute_in_process(resources=data).success  # nothing new: nothing recorded twice
    with connect(home / "warehouse.duckdb", read_only=True) as conn:
        assert conn.execute("SELECT count(*) FROM ledger_events").fetchone()[0] == 3


def test_ledger_events_are_recorded_in_order_once_and_never_past_a_gap(tmp_path):
    ledger = tmp_path / "ledger"
    for version in ("aaaaaaaaaaaa", "bbbbbbbbbbbb", "cccccccccccc"):
        with ledger_connection(ledger) as conn:
            record_model(conn, _row(version))
            set_alias(conn, version, "nima_ava")
    hidden = event_path(ledger, 2).with_suffix(".hidden")  # as an NFS listing that does not show it yet
    event_path(ledger, 2).rename(hidden)
    with connect(tmp_path / "warehouse.duckdb") as conn:
        assert record_ledger(conn, ledger) == [1]
        assert current_model(conn, "nima_ava").version == "aaaaaaaaaaaa"
        hidden.rename(event_path(ledger, 2))
        assert record_ledger(conn, ledger) == [2, 3]
        assert record_ledger(conn, ledger) == []
        assert current_model(conn, "nima_ava").version == "cccccccccccc"
        assert get_model(conn, "bbbbbbbbbbbb").trained_on.worker == "w"


def test_the_ledger_refuses_a_deleted_row_another_table_or_a_second_writer_and_keeps_what_it_had(tmp_path):
    ledger = tmp_path / "ledger"
    with ledger_connection(ledger) as conn:
        record_model(conn, _row("aaaaaaaaaaaa"))
    with pytest.raises(LedgerError, match="inserts and replacements only"), ledger_connection(ledger) as conn:
        conn.execute("DELETE FROM models")
    with pytest.raises(LedgerError, match="wrote ava_tags"), ledger_connection(ledger) as conn:
        conn.execute("INSERT INTO ava_tags VALUES (1, 'portrait')")
    assert event_numbers(ledger) == [1]
    with pytest.raises(LedgerError, match="another host writes this ledger"), ledger_connection(ledger) as conn:
        record_model(conn, _row("bbbbbbbbbbbb"))
        shutil.copy(event_path(ledger, 1), event_path(ledger, 2))  # another host wrote event 2 meanwhile
    assert event_path(ledger, 2).read_bytes() == event_path(ledger, 1).read_bytes()  # theirs, not overwritten
    assert event_numbers(ledger) == [1, 2]
    with ledger_connection(ledger, read_only=True) as conn:
        assert [r[0] for r in conn.execute("SELECT version FROM models").fetchall()] == ["aaaaaaaaaaaa"]


def test_the_ledger_sensor_asks_for_one_record_run_per_new_ledger_state(tmp_path):
    home = tmp_path / "home"
    resources = build_resources(home=home, raw=tmp_path / "raw")
    with dg.instance_for_test() as instance:
        def tick(cursor: str | None):
            context = dg.build_sensor_context(instance=instance, cursor=cursor, resources=resources)
            return model_ledger_sensor(context)

        assert isinstance(tick(None), dg.SkipReason)
        for version in ("aaaaaaaaaaaa", "bbbbbbbbbbbb"):
            with ledger_connection(home / "ledger") as conn:
                record_model(conn, _row(version))
        result = tick(None)
        assert [r.run_key for r in result.run_requests] == ["ledger:2"] and result.cursor == "2"
        assert isinstance(tick("2"), dg.SkipReason)
