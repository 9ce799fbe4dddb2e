"""Configs: every zoo config loads; bad keys, types and values are refused naming file and key."""
import pytest

from ila_fast.config import ConfigError, ModelConfig, load_config
from ila_fast.zoo import ZOO, config_path, load_zoo_config


def write(tmp_path, text, name="run.toml"):
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.parametrize("entry", ZOO, ids=lambda e: e.config)
def test_zoo_configs_build_what_their_names_say(entry):
    cfg = load_zoo_config(entry.config).model
    dataset, arch, *rest = entry.config.split("_")
    assert cfg.dataset == dataset
    assert cfg.arch == {"b32": "ViT-B/32", "b16": "ViT-B/16", "l14": "ViT-L/14"}[arch]
    assert cfg.frames == int(rest[-1].rstrip("f"))
    assert cfg.input_size == (336 if "336" in rest else 224)
    assert cfg.patch_size == int(arch[1:])
    assert cfg.num_classes == {"k400": 400, "ssv2": 174}[dataset]
    assert cfg.interactive == {"k400": "depthwise", "ssv2": "dense"}[dataset]


def test_misspelled_key_is_refused_with_file_key_and_suggestion(tmp_path):
    path = write(tmp_path, '[model]\narch = "ViT-B/16"\nframse = 8\n')
    with pytest.raises(ConfigError) as e:
        load_config(path)
    msg = str(e.value)
    assert str(path) in msg and "model.framse" in msg and "did you mean 'frames'" in msg


def test_misspelled_section_is_refused(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown key 'modle'.*did you mean 'model'"):
        load_config(write(tmp_path, '[modle]\nframes = 8\n'))


@pytest.mark.parametrize("line, expected", [
    ('frames = "8"', "'model.frames' = '8' has type str, expected int"),
    ("frames = 8.5", "'model.frames' = 8.5 has type float, expected int"),
    ("frames = true", "'model.frames' = True has type bool, expected int"),
    ("drop_path = \"0.1\"", "'model.drop_path'"),
])
def test_wrong_type_is_refused(tmp_path, line, expected):
    with pytest.raises(ConfigError) as e:
        load_config(write(tmp_path, f"[model]\n{line}\n"))
    assert expected in str(e.value)


@pytest.mark.parametrize("body, expected", [
    ("input_size = 220", "not divisible by patch_size = 16"),
    ("frames = 1", "T must be >= 2"),
    ('arch = "ViT-B/61"', "did you mean 'ViT-B/16'"),
    ('dataset = "kinetics"', "model.dataset"),
    ('kernels = "cuda"', "model.kernels"),
    ("input_size = 48", "at least 4x4"),
    ("correlation_channels = 100", "multiple of 8"),
    ("drop_path = 1.5", "model.drop_path"),
    ('arch = "custom"\nwidth = 64', "missing: patch_size"),
])
def test_impossible_value_is_refused(tmp_path, body, expected):
    path = write(tmp_path, f"[model]\n{body}\n")
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert expected in str(e.value) and str(path) in str(e.value)


def test_invalid_toml_names_the_file(tmp_path):
    path = write(tmp_path, "[model\nframes = 8\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(path)


def test_overrides_and_defaults(tmp_path):
    cfg = load_config(config_path("tiny"), {"model.frames": 6, "name": "x"})
    assert cfg.name == "x" and cfg.model.frames == 6 and cfg.model.width == 64
    assert ModelConfig(arch="ViT-L/14", input_size=336).grid_size == 24


def test_cli_refuses_bad_config_before_work(tmp_path, capsys):
    from ila_fast.cli import main

    path = write(tmp_path, "[model]\nframes = 0\n")
    assert main(["demo", "--config", str(path), "--out", str(tmp_path / "demo")]) == 2
    assert "T must be >= 2" in capsys.readouterr().err
