"""ila-fast submit without a cluster: config section, time formats, sweeps, sbatch parameters, dry run."""
import subprocess
import sys
from pathlib import Path

import pytest
from ila_fast.slurm import launcher
from ila_fast.slurm.entry import job_port

from ila_fast.config import ConfigError, load_config, slurm_time_minutes

TINY = Path(__file__).resolve().parents[1] / "configs" / "tiny.toml"


@pytest.mark.parametrize("text, minutes", [("90", 90), (90, 90), ("04:00:00", 240), ("2-00:00:00", 2880),
                                           ("1-12", 2160), ("0-00:30", 30), ("00:30", 1), ("10:00:01", 601)])
def test_slurm_time_formats(text, minutes):
    assert slurm_time_minutes(text) == minutes


@pytest.mark.parametrize("text", ["1:2:3:4", "2 days", "", "0"])
def test_slurm_time_refused(text):
    with pytest.raises(ConfigError, match="time"):
        slurm_time_minutes(text)


def test_slurm_section_is_strict(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('[model]\narch = "tiny"\nnum_classes = 8\n[slurm]\npartiton = "gpu"\n')
    with pytest.raises(ConfigError, match="partiton.*did you mean 'partition'"):
        load_config(path)
    path.write_text('[slurm]\nsbatch = ["exclusive"]\n')
    with pytest.raises(ConfigError, match="slurm.sbatch: 'exclusive' is not KEY=VALUE"):
        load_config(path)


def test_sweep_points_are_the_product():
    points = launcher.sweep_points(["train.lr_mit=1e-4,2e-4", "data.batch_size=4,8"])
    assert points == [{"train.lr_mit": 1e-4, "data.batch_size": 4}, {"train.lr_mit": 1e-4, "data.batch_size": 8},
                      {"train.lr_mit": 2e-4, "data.batch_size": 4}, {"train.lr_mit": 2e-4, "data.batch_size": 8}]
    assert len({launcher.point_name(p) for p in points}) == 4
    with pytest.raises(ConfigError, match="did you mean 'lr_mit'"):
        launcher.sweep_points(["train.lr_mti=1,2"])


def test_sbatch_parameters_map_one_to_one():
    cfg = load_config(TINY, {"slurm.nodes": 4, "slurm.gpus_per_node": 8, "slurm.partition": "gpu",
                             "slurm.time": "2-00:00:00", "slurm.mem": "400G", "slurm.cpus_per_task": 10,
                             "slurm.sbatch": ["exclude=node7", "exclusive="], "slurm.account": "lab"})
    params = launcher.sbatch_parameters(cfg)
    assert params["nodes"] == 4 and params["ntasks_per_node"] == 8 and params["gpus_per_node"] == 8
    assert params["time"] == 2880 and params["cpus_per_task"] == 10 and params["partition"] == "gpu"
    assert params["account"] == "lab" and "qos" not in params
    assert params["additional_parameters"] == {"mem": "400G", "exclude": "node7", "exclusive": True}
    cpu = launcher.sbatch_parameters(load_config(TINY, {"slurm.gpus_per_node": 0, "slurm.tasks_per_node": 2}))
    assert "gpus_per_node" not in cpu and cpu["ntasks_per_node"] == 2


def test_job_port_is_stable_and_in_range():
    assert job_port("123") == job_port("123") != job_port("124")
    assert all(20000 <= job_port(j) < 40000 for j in ("1", "99999999", "123_4"))


def test_dry_run_prints_the_sbatch_script(tmp_path):
    out = subprocess.run([sys.executable, "-m", "ila_fast.cli", "submit", "--config", str(TINY), "--output",
                          str(tmp_path / "run"), "--nodes", "2", "--gpus-per-node", "4", "--time", "04:00:00",
                          "--partition", "gpu", "--qos", "high", "--sbatch", "exclude=n1", "--parallelism", "hsdp",
                          "--sweep", "train.lr_mit=1e-4,2e-4", "--dry-run"],
                         check=False, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    for line in ("#SBATCH --nodes=2", "#SBATCH --ntasks-per-node=4", "#SBATCH --gpus-per-node=4",
                 "#SBATCH --time=240", "#SBATCH --partition=gpu", "#SBATCH --qos=high", "#SBATCH --exclude=n1",
                 "#SBATCH --array=0-1%2", "#SBATCH --signal=USR2@120", "--kill-on-bad-exit=1"):
        assert line in out.stdout, line
    assert out.stdout.count("# run ") == 2
    assert not (tmp_path / "run").exists()   # a dry run writes nothing


def test_submit_refuses_bad_input(tmp_path):
    out = subprocess.run([sys.executable, "-m", "ila_fast.cli", "submit", "--config", str(TINY), "--output",
                          str(tmp_path), "--time", "soon", "--dry-run"], check=False, capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "slurm.time 'soon'" in out.stderr


def test_signal_must_leave_time_to_start():
    # Slurm signals up to 30 s before slurm.signal_delay_s; start-up needs up to a minute
    with pytest.raises(ConfigError, match="signal_delay_s = 30 s.*signal_delay_s=0"):
        launcher.sbatch_parameters(load_config(TINY, {"slurm.time": "1", "slurm.signal_delay_s": 30}))
    assert launcher.sbatch_parameters(load_config(TINY, {"slurm.time": "2", "slurm.signal_delay_s": 30}))["time"] == 2
