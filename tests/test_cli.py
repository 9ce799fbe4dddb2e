"""The README's main commands: the zoo is measured (the demo: test_demo.py)."""
import re
from pathlib import Path

from ila_fast.cli import main


# The demo (ILA vs the frame-only baseline, trained through the trainer): tests/test_demo.py.


def test_zoo_prints_measured_parameters_and_flops(capsys):
    assert main(["zoo"]) == 0
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.startswith("k400_b16_8f "))
    assert " 199.94 " in row and " 43.62 " in row
    assert len([line for line in out.splitlines() if re.match(r"(k400|ssv2)_", line)]) == 10


def test_unknown_command_is_refused(capsys):
    import pytest

    with pytest.raises(SystemExit):
        main(["trian"])
    assert "invalid choice" in capsys.readouterr().err


# ------------------------------------------------------------ parser: light, versioned, documented
def test_parser_imports_no_torch_and_every_option_has_help():
    """Building the whole parser (every command's options) must not import torch or numpy."""
    import subprocess
    import sys

    code = ("import sys, ila_fast.cli as c\n"
            "names = []\n"
            "for name in c.COMMANDS:\n"
            "    try:\n"
            "        c.build_parser([name]); names.append(name)\n"
            "    except c.Unavailable as e:\n"
            "        print('unavailable:', e)\n"
            "heavy = sorted(m for m in ('torch', 'numpy', 'av', 'open_clip', 'submitit') if m in sys.modules)\n"
            "print('built', len(names), 'heavy', heavy)\n"
            "def walk(parser):\n"
            "    for a in parser._actions:\n"
            "        if isinstance(a.choices, dict):\n"
            "            for sub in a.choices.values():\n"
            "                walk(sub)\n"
            "        elif not a.help:\n"
            "            print('no help:', parser.prog, a.dest)\n"
            "walk(c.build_parser(names))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "heavy []" in out.stdout, out.stdout
    assert "no help:" not in out.stdout, out.stdout


def test_version_and_help(capsys):
    import pytest

    import ila_fast

    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.strip() == f"ila-fast {ila_fast.__version__}"
    with pytest.raises(SystemExit) as e:
        main(["make-synthetic", "--help"])
    out = capsys.readouterr().out
    assert e.value.code == 0 and "(default: 12)" in out and "(default: 128x96)" in out


def test_configs_by_name(capsys):
    from ila_fast.config import bundled_configs, load_config, resolve_config_path

    assert main(["configs"]) == 0
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.startswith("k400_b16_8f "))
    assert row.split()[1:4] == ["ViT-B/16", "k400", "8x224"]
    shipped = sorted(p.stem for p in (Path(__file__).parents[1] / "configs").glob("*.toml"))
    assert sorted(bundled_configs()) == shipped and "tiny" in shipped and len(shipped) >= 11
    assert len([line for line in out.splitlines() if ".toml" in line]) == len(shipped)
    assert resolve_config_path("k400_b16_8f") == bundled_configs()["k400_b16_8f"]
    assert resolve_config_path("k400_b16_8f.toml") == bundled_configs()["k400_b16_8f"]
    assert load_config("ssv2_b16_8f").model.num_classes == 174


def test_config_show_prints_the_resolved_toml(tmp_path, capsys):
    """The printed text loads back to the same config, overrides applied."""
    from ila_fast.config import load_config, to_toml

    assert main(["config", "show", "tiny", "--set", "model.frames=6", "--set", "data.root=/videos"]) == 0
    text = capsys.readouterr().out
    (tmp_path / "shown.toml").write_text(text)
    shown = load_config(tmp_path / "shown.toml")
    assert shown.model.frames == 6 and shown.data.root == "/videos" and shown.model.width == 64
    assert to_toml(shown) == text
    assert shown == load_config("tiny", {"model.frames": 6, "data.root": "/videos"})


def test_make_synthetic_codecs_match_the_writer():
    from ila_fast.commands.make_synthetic import CODECS
    from ila_fast.data.synthetic import CODECS as WRITER_CODECS

    assert sorted(CODECS) == sorted(WRITER_CODECS)
