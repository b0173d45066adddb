import pytest

from reprodistill.config import RunConfig, load_config, parse_override
from reprodistill.errors import ConfigError
from reprodistill.methods import check_config


def test_default_preset_loads_and_overrides_apply():
    overrides = ["train.epochs=3", "train.steps=null", "student.name=mobilenetv3_small_100", "data.fraction=0.1"]
    cfg = load_config("default", [*overrides, "methods=student"])
    assert isinstance(cfg, RunConfig)
    assert cfg.train.epochs == 3 and cfg.student.name == "mobilenetv3_small_100"
    assert cfg.data.fraction == 0.1 and cfg.methods == ["student"]
    assert cfg.teacher.name == "merlin"


def test_override_values_are_parsed_as_yaml():
    assert parse_override("train.lr=3e-4") == (["train", "lr"], 3e-4)
    assert parse_override("methods=[a,b]") == (["methods"], ["a", "b"])
    assert parse_override("data.root=") == (["data", "root"], None)


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.epoch=3", "unknown key(s) ['epoch']; valid keys: ['epochs'"),
        ("trian.epochs=3", "unknown key(s) ['trian']"),
        ("train.optimizer=adam", "choose one of ['adamw', 'sgd']"),
        ("train.epochs=three", "train.epochs: expected an integer"),
        ("student.pretrained=maybe", "expected true or false"),
        ("data.fraction=1.5", "data.fraction must be in (0, 1]"),
        ("method_options.student.foo=1", "method_options.student: unknown key(s) ['foo']"),
        ("train.epochs", "must look like section.key=value"),
    ],
)
def test_bad_config_gives_clear_error(override, message):
    with pytest.raises(ConfigError) as e:
        check_config(load_config("default", [override]))
    assert message in str(e.value)


def test_unknown_method_lists_every_registered_one():
    from reprodistill.methods import METHODS

    with pytest.raises(ConfigError) as e:
        check_config(load_config("default", ["methods=[nope]"]))
    assert f"unknown method 'nope'; valid names: {', '.join(sorted(METHODS.names()))}" in str(e.value)


def test_unknown_preset_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="unknown preset 'nope'; presets: \\['bench', 'breast-bench', 'default'"):
        load_config("nope")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(str(bad))
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(str(tmp_path / "missing.yaml"))


def test_flat_format_keys_of_earlier_versions_still_load(caplog):
    """data.dicom_window / data.csv_* (flat keys before the format sections) load into data.dicom / data.csv, with
    a warning naming the new key, so older configs and run folders still run."""
    from reprodistill.config import load_config

    cfg = load_config("default", ["data.dicom_window=lung", "data.csv_label_column=finding", "data.csv.rows=max"])
    assert cfg.data.dicom.window == "lung" and cfg.data.csv.label_column == "finding" and cfg.data.csv.rows == "max"
    assert "data.dicom_window is now data.dicom.window" in caplog.text


def test_a_bench_variant_may_set_the_cached_views_but_not_the_fm():
    from reprodistill.config import apply_variant_sections, load_config

    cfg = load_config("breast-bench", ["methods=[rd-unl-cv]"])
    variant = apply_variant_sections(cfg, "rd-unl-cv")
    assert (variant.teacher.views, variant.teacher.view_augment, variant.teacher.name) == (8, "strong", "merlin")
    with pytest.raises(ConfigError, match="would change the FM"):
        load_config("breast-bench", ["methods=[x]", "bench.variants.x={method: rd, teacher: {name: other}}"])


def test_a_run_folder_written_with_the_flat_keys_still_resumes(tmp_path):
    """A run folder whose config.yaml has data.dicom_window / data.csv_* (before the format sections) holds the same
    run as today's config with the same values: it resumes instead of stopping on 'a different config'."""
    import yaml

    from reprodistill.config import to_dict
    from reprodistill.engine.run_dir import RunDir

    cfg = load_config("default", ["data.dicom.window=lung"])
    old = to_dict(cfg)
    dicom, csv = old["data"].pop("dicom"), old["data"].pop("csv")
    old["data"] |= {f"dicom_{k}": v for k, v in dicom.items()} | {f"csv_{k}": v for k, v in csv.items()}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(old))
    (tmp_path / "student").mkdir()
    (tmp_path / "student" / "metrics.csv").write_text("epoch\n1\n")
    assert RunDir(tmp_path).holds_same_run(cfg)
    with pytest.raises(Exception, match="different config.*data.dicom.window"):
        RunDir(tmp_path).holds_same_run(load_config("default", ["data.dicom.window=bone"]))
