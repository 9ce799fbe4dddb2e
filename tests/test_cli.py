"""The README's main commands: the demo trains on real synthetic videos; the zoo is measured."""
import re

from ila_fast.cli import main


def test_demo_trains_the_tiny_model_on_synthetic_videos(capsys):
    assert main(["demo", "--no-zoo", "--steps", "2"]) == 0
    out = capsys.readouterr().out
    losses = [float(x) for x in re.findall(r"classification loss (\d+\.\d+)", out)]
    aux = [float(x) for x in re.findall(r"alignment loss (\d+\.\d+)", out)]
    assert len(losses) == 2 and len(aux) == 2
    # 8 classes with smoothed / mixed targets: a fresh model's loss is near log(8) = 2.08, and finite
    assert all(0.5 < loss < 10 for loss in losses) and all(0.0 <= a < 2 * 2 for a in aux)
    assert "(4, 4, 3, 64, 64)" in out and "0 bad videos of 16" in out


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
