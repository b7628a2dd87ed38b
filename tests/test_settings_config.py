"""Each stage's settings are declared once, on its settings dataclass: the Dagster config is generated from it
(assets/settings_config.py) with the same field names, defaults, ranges and descriptions, a bad value is refused
by the settings alone (one message, whether it arrives by the run config or by the command line), and a field
added to a settings class reaches the config with no edit to the asset.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import dagster as dg
import pytest

from assets.ava import AvaConfig
from assets.critic import CriticEvolutionConfig, CriticOnnxConfig
from assets.curation import CurationConfig
from assets.downloads import DownloadConfig, DownloadFile
from assets.evaluation import EvalConfig
from assets.kuler import KulerConfig
from assets.sac import SacConfig
from assets.settings_config import settings_config
from assets.shards import ShardsConfig
from assets.train_config import TrainConfig
from cli.main import build_parser, main
from common.bounds import HELP, RANGE, Range, bounded, help_of, setting
from critic.settings import BackendSettings, CurateSettings, EvolveSettings, ExportSettings
from ingest.ava import AvaSettings
from ingest.download import DownloadError, DownloadSettings, DropFile
from ingest.kuler import KulerSettings
from ingest.sac import SacSettings
from ingest.shards import ShardSettings
from nima_train.settings import EvalSettings, TrainSettings
from pipelines.definitions import defs
from pipelines.resources import build_resources

# (config, its settings, settings fields the step supplies itself, fields that are not the stage's, defaults the
# config changes, settings of parts whose fields the config also carries)
STAGES = [
    (AvaConfig, AvaSettings, {"val_fraction", "batch_size"}, set(), {}, ()),
    (KulerConfig, KulerSettings, set(), set(), {}, ()),
    (SacConfig, SacSettings, {"snapshots"}, set(), {}, ()),
    (ShardsConfig, ShardSettings, {"dataset"}, {"drop_cross_split_duplicates", "leak_model"}, {}, ()),
    (CurationConfig, CurateSettings, set(), {"shards", "model"}, {"workers": 2}, (BackendSettings,)),
    (CriticEvolutionConfig, EvolveSettings, {"size", "rate", "strength"}, {"model", "shape"},
     {"rounds": 4, "batch": 8}, (BackendSettings,)),
    (CriticOnnxConfig, ExportSettings, set(), {"model"}, {}, ()),
    (EvalConfig, EvalSettings, set(), {"device", "allow_pipe"}, {}, ()),
    (DownloadConfig, DownloadSettings, {"dest_dir", "backoff_s", "reserve_bytes"}, {"files"}, {"url": ""}, ()),
    (DownloadFile, DropFile, set(), set(), {}, ()),
    (TrainConfig, TrainSettings, set(), {"nproc", "device", "allow_pipe", "launch"}, {}, ()),
]


@pytest.mark.parametrize(("config", "settings", "supplied", "own", "changed", "parts"),
                         STAGES, ids=[s[0].__name__ for s in STAGES])
def test_each_config_field_is_its_settings_field(config, settings, supplied, own, changed, parts):
    spec = {f.name: f for cls in (settings, *parts) for f in dataclasses.fields(cls) if f.name not in supplied}
    fields = config.model_fields
    assert set(fields) - set(spec) == own  # nothing of the stage's declared on the config by hand
    for name, f in spec.items():
        info = fields[name]
        if name in changed or f.default is not dataclasses.MISSING:
            assert info.default == changed.get(name, f.default), name
        else:
            assert info.is_required(), name
        assert info.description.startswith(f.metadata[HELP]), name
        if RANGE in f.metadata:
            rng = f.metadata[RANGE]
            assert {type(m).__name__.lower(): getattr(m, type(m).__name__.lower()) for m in info.metadata} == \
                rng.pydantic(), name


def test_a_flat_setting_takes_the_range_of_the_part_it_feeds():
    # AvaSettings.crop_size is CropSpec.size, composed by AvaSettings.spec: one range, written on CropSpec.
    from common.bounds import range_of
    from ingest.crops import CropSpec
    from ingest.fetch import HttpOptions

    assert range_of(AvaSettings, "crop_size") is range_of(CropSpec, "size")
    assert range_of(AvaSettings, "http_timeout_s") is range_of(HttpOptions, "timeout_s")
    made = AvaSettings(acquisition="parquet", source="shards", crop_size=64, crop_mode="squash", min_side=8,
                       http_retries=1, parquet_id_column="key")
    assert (made.spec, made.http.retries, made.parquet.id) == (CropSpec(64, "squash", 8), 1, "key")
    assert (str(made.archive), made.images_dir, made.url_template) == ("shards", None, "")


BAD = [
    (AvaConfig, AvaSettings, {"acquisition": "ftp"}, "ava"),
    (AvaConfig, AvaSettings, {"acquisition": "zip"}, "ava"),  # no source
    (AvaConfig, AvaSettings, {"acquisition": "http", "source": "https://h/{votes}.jpg"}, "ava"),
    (AvaConfig, AvaSettings, {"crop_mode": "circle"}, "ava"),
    (KulerConfig, KulerSettings, {"release": "2013"}, "kuler"),
    (KulerConfig, KulerSettings, {"mapping": "wide"}, "kuler"),
    (SacConfig, SacSettings, {"crop_mode": "circle"}, "sac"),
    (TrainConfig, TrainSettings, {"opt": "rmsprop"}, "training"),
]


@pytest.mark.parametrize(("config", "settings", "values", "prefix"), BAD,
                         ids=[f"{c.__name__}-{next(iter(v.values()))}" for c, _, v, _ in BAD])
def test_a_bad_value_fails_as_one_line_with_the_settings_own_message(config, settings, values, prefix):
    with pytest.raises(ValueError) as refused:
        settings(**values)
    with pytest.raises(dg.Failure) as failed:
        config(**values).settings()
    assert failed.value.description == f"{prefix}: {refused.value}"
    assert "\n" not in failed.value.description


def _materialize(asset: str, config: dict, tmp_path) -> dg.ExecuteInJobResult:
    (target,) = [a for a in defs.assets if isinstance(a, dg.AssetsDefinition) and a.node_def.name == asset]
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    return dg.materialize([target], resources=build_resources(home=home, raw=tmp_path / "raw"), selection=[asset],
                          instance=dg.DagsterInstance.ephemeral(), raise_on_error=False,
                          run_config={"ops": {asset: {"config": config}}})


def _failure(result: dg.ExecuteInJobResult) -> str:
    (event,) = [e for e in result.all_events if e.is_step_failure]
    return event.step_failure_data.user_failure_data.description


def test_a_run_config_with_a_bad_choice_fails_the_step_with_the_settings_message(tmp_path):
    with pytest.raises(ValueError) as refused:
        AvaSettings(acquisition="ftp")
    result = _materialize("ava_images", {"acquisition": "ftp"}, tmp_path)
    assert not result.success
    assert _failure(result) == f"ava: {refused.value}"
    assert not (tmp_path / "home" / "warehouse.duckdb").exists()  # refused before the stage opened anything


DOWNLOAD_BAD = [
    ({"sha256": "abc"}, ["--sha256", "abc"]),
    ({"size": 100, "max_bytes": 10}, ["--size", "100", "--max-bytes", "10"]),
]


@pytest.mark.parametrize(("config", "flags"), DOWNLOAD_BAD, ids=["sha256", "size-over-cap"])
def test_a_bad_download_value_reads_the_same_by_run_config_and_by_command_line(config, flags, tmp_path, capsys):
    url = "https://example.org/AVA_dataset.zip"  # refused before any connection is made
    with pytest.raises(DownloadError) as refused:
        DownloadSettings(url=url, dest_dir=tmp_path, **config)
    message = str(refused.value)
    result = _materialize("ava_archive", {"url": url, **config}, tmp_path)
    assert _failure(result) == f"ava download: {message}"
    with pytest.raises(SystemExit):
        main(["download", "ava", "--url", url, "--raw", str(tmp_path / "raw"), *flags])
    assert message in capsys.readouterr().err
    assert not (tmp_path / "raw" / "ava").exists()


def test_a_field_added_to_a_settings_class_appears_in_its_config():
    @dataclass(frozen=True)
    class Grown(KulerSettings):
        rings: int = bounded(3, Range(0, 9, "rings a swatch can hold"), "rings drawn round each swatch")
        label: str = setting("none", "what each swatch is labelled with")

    config = settings_config(Grown, "kuler")
    assert list(config.model_fields)[-2:] == ["rings", "label"]
    assert config.model_fields["rings"].default == 3
    assert config.model_fields["rings"].description.startswith("rings drawn round each swatch")
    assert config(rings=5, label="mean").settings() == Grown(rings=5, label="mean")
    with pytest.raises(Exception, match="rings"):
        config(rings=10)  # the range, refused by the run config before the step


TWINS = [("curate", CurationConfig, CurateSettings), ("evolve", CriticEvolutionConfig, EvolveSettings),
         ("download", DownloadConfig, DownloadSettings)]


@pytest.mark.parametrize(("verb", "config", "settings"), TWINS, ids=[t[0] for t in TWINS])
def test_a_flag_and_its_config_field_say_the_same_help(verb, config, settings):
    (sub,) = [a for a in build_parser()._actions if a.dest == "verb"]
    flags = {a.dest: a for a in sub.choices[verb]._actions if a.option_strings}
    own = {f.name for f in dataclasses.fields(settings)}
    shared = [n for n in config.model_fields if n in flags and n in own]
    assert len(shared) >= 3
    for name in shared:
        text = help_of(settings, name)
        assert flags[name].help.startswith(text) and config.model_fields[name].description.startswith(text), name
