"""The trainer on a CPU: recipe, accumulation, FSDP ranks, resume, kills, non-finite steps,
compile, export. Real videos (a tiny synthetic dataset), the tiny model, a few steps each."""
from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
import train_helpers as h  # noqa: E402

from ila_fast.config import ConfigError, accumulation_steps, load_config, parse_overrides  # noqa: E402
from ila_fast.errors import UserError  # noqa: E402
from ila_fast.train import Trainer  # noqa: E402
from ila_fast.train.checkpoint import complete_checkpoints, latest_checkpoint  # noqa: E402
from ila_fast.train.recipe import lr_at, param_groups  # noqa: E402


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return h.make_dataset(tmp_path_factory.mktemp("videos"))


def run(root, output, **extra) -> dict:
    return Trainer(h.tiny_config(root, **extra), output).fit()


def assert_states_close(a: dict, b: dict, atol=1e-5):
    """Parameters agree to ``atol`` (the runs move them by ~1e-2 per step: lr 1e-2 under Adam; fp32
    reductions in another order differ by ~1e-6 after a few steps), except attention's key bias: its true gradient is exactly zero
    (softmax is shift-invariant), so Adam, dividing by sqrt(v), turns rounding noise into steps of up
    to lr there. That slice carries no information and is left out."""
    assert a.keys() == b.keys()
    for k in a:
        x, y = a[k].double(), b[k].double()
        if k.endswith("attn.in_proj_bias"):
            third = x.shape[0] // 3
            x, y = torch.cat([x[:third], x[2 * third:]]), torch.cat([y[:third], y[2 * third:]])
        assert torch.allclose(x, y, atol=atol, rtol=1e-5), (k, (x - y).abs().max())


# ---------------------------------------------------------------- recipe and config

def test_param_groups_follow_the_recipe_for_a_zoo_config():
    from ila_fast.model import ILAModel

    cfg = load_config("k400_b16_8f")
    with torch.device("meta"):
        model = ILAModel(cfg.model)
    groups = param_groups(model, cfg.train)
    by_param = {id(p): g for g in groups for p in g["params"]}
    expected = {"message": (5e-4, 1e-2), "temporal": (8e-5, 1e-3), "mit": (4e-4, 3e-3)}
    names = dict(model.named_parameters())
    trainable = {n for n, p in names.items() if p.requires_grad}
    assert sum(len(g["params"]) for g in groups) == len(trainable)  # each trainable parameter exactly once
    seen = set()
    for name in trainable:
        g = by_param[id(names[name])]
        # docs/recipe.md, written out independently of recipe.group_of
        kind = ("message" if "message_" in name else "temporal" if "temporal_" in name else
                "mit" if name.startswith("mit.") else None)
        assert kind is not None, name
        lr, wd = expected[kind]
        decay = not (names[name].ndim == 1 or name.endswith("bias") or "positional_embedding" in name)
        assert g["lr"] == lr and g["weight_decay"] == (wd if decay else 0.0), name
        seen.add((kind, decay))
    assert seen == {(k, d) for k in expected for d in (True, False)}
    # the temporal group is exactly the two zero-initialised residual Linears of each block
    temporal = [n for n in trainable if by_param[id(names[n])]["name"].startswith("temporal")]
    assert sorted({n.split(".")[-2] for n in temporal}) == ["temporal_align_fc", "temporal_skip_fc"]
    assert len(temporal) == 12 * 2 * 2
    assert "mit.positional_embedding" in [n for n in trainable if by_param[id(names[n])]["weight_decay"] == 0]


def test_schedule_values_at_warmup_end_midway_and_end():
    base, min_lr, total, warm = 5e-4, 8e-8, 1000, 100
    assert lr_at(0, base, total, warm, min_lr) == 0.0
    assert lr_at(50, base, total, warm, min_lr) == pytest.approx(base / 2)
    # after warm-up the cosine is evaluated at the absolute step (timm, t_initial = all steps)
    assert lr_at(warm, base, total, warm, min_lr) == pytest.approx(
        min_lr + 0.5 * (base - min_lr) * (1 + math.cos(math.pi * 0.1)))
    assert lr_at(500, base, total, warm, min_lr) == pytest.approx((base + min_lr) / 2)
    assert lr_at(total, base, total, warm, min_lr) == pytest.approx(min_lr)


def test_set_overrides_and_accumulation_refusals():
    cfg = load_config("tiny", parse_overrides(["train.lr_mit=1e-4", "data.batch_size=4", "train.compile=true"]))
    assert (cfg.train.lr_mit, cfg.data.batch_size, cfg.train.compile) == (1e-4, 4, True)
    with pytest.raises(ConfigError, match="did you mean 'lr_mit'"):
        parse_overrides(["train.lr_mti=1e-4"])
    with pytest.raises(ConfigError, match="did you mean 'train'"):
        parse_overrides(["trian.epochs=3"])
    with pytest.raises(ConfigError, match="train.precision"):
        load_config("tiny", parse_overrides(["train.precision=fp8"]))
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        parse_overrides(["train.epochs"])
    cfg = load_config("tiny", parse_overrides(["train.total_batch=12", "data.batch_size=4"]))
    assert accumulation_steps(cfg, 1) == 3
    with pytest.raises(ConfigError, match="not a multiple of data.batch_size x world size = 4 x 2"):
        accumulation_steps(cfg, 2)


# ---------------------------------------------------------------- equivalences

def test_accumulation_gives_the_same_update(dataset, tmp_path):
    # BatchNorm in running-statistics mode and no mixing: every clip's gradient is independent of its
    # micro-batch, so 1 x 4 and 2 x 2 must give the same step.
    # The lr of the per-step schedule: the recipe's micro-batch schedule gives 1 x 4 and 2 x 2 different lrs
    # (its lag is one micro-batch; tests/test_recipe_lr.py checks it).
    common = dict(train__freeze_bn_stats=True, data__mix_p=0.0, train__max_steps=2, train__total_batch=4,
                  train__lr_schedule="per_step")
    run(dataset, tmp_path / "one", data__batch_size=4, **common)
    run(dataset, tmp_path / "acc", data__batch_size=2, **common)
    assert [v for *_, v in h.samples(tmp_path / "one")] == \
        [v[:2] + v[2:] for v in _merge(h.samples(tmp_path / "acc"), 2)]
    a, b = h.losses(tmp_path / "one"), h.losses(tmp_path / "acc")
    assert a.keys() == b.keys() == {1, 2}
    for step in a:
        assert a[step] == pytest.approx(b[step], rel=1e-5)
    before = h.trainable_state(tmp_path / "one")
    assert_states_close(before, h.trainable_state(tmp_path / "acc"))


def _merge(records, accumulation):
    """Micro-step sample ids -> one tuple per optimizer step."""
    out = []
    for i in range(0, len(records), accumulation):
        out.append(sum((v for *_, v in records[i:i + accumulation]), ()))
    return out


def test_two_fsdp_ranks_match_one_process_and_resume_on_one(dataset, tmp_path):
    # the per-step lr: the recipe's micro-batch schedule indexes micro-batches per rank, so 2 ranks x 1 and
    # 1 x 2 micro-batches per step run at slightly different lrs (as the official code would)
    common = ["train.freeze_bn_stats=true", "data.mix_p=0.0", "train.max_steps=3", f"data.root={dataset}",
              "train.lr_schedule=per_step"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port", str(_free_port()),
           str(Path(h.__file__)), str(tmp_path / "two"), *common]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    two_ranks = h.losses(tmp_path / "two")
    ranks = [h.samples(tmp_path / "two", r) for r in (0, 1)]
    run(dataset, tmp_path / "one", train__freeze_bn_stats=True, data__mix_p=0.0, train__max_steps=5,
        train__lr_schedule="per_step")
    one = h.losses(tmp_path / "one")
    assert two_ranks.keys() == {1, 2, 3}
    for step in two_ranks:
        assert two_ranks[step] == pytest.approx(one[step], rel=1e-5)
    # the two ranks together saw exactly the single process's clips, step by step
    merged = [sorted(a[2] + b[2]) for a, b in zip(*ranks)]
    assert merged == [sorted(v) for v in _merge(h.samples(tmp_path / "one"), 2)][:3]
    # DCP reshards: the 2-rank checkpoint resumes on one process and continues as if never split
    summary = run(dataset, tmp_path / "two", train__freeze_bn_stats=True, data__mix_p=0.0, train__max_steps=5,
                  train__lr_schedule="per_step")
    assert summary["step"] == 5
    resumed = h.losses(tmp_path / "two")
    for step in (4, 5):
        assert resumed[step] == pytest.approx(one[step], rel=1e-5)
    assert_states_close(h.trainable_state(tmp_path / "one"), h.trainable_state(tmp_path / "two"))


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------- resume

def test_resume_repeats_nothing_and_ends_identical_across_an_epoch_boundary(dataset, tmp_path):
    # 4 steps per epoch: the stop at step 3 and the resume cross into epoch 1.
    run(dataset, tmp_path / "straight", train__max_steps=6)
    first = run(dataset, tmp_path / "split", train__max_steps=3)
    assert first["step"] == 3 and latest_checkpoint(tmp_path / "split").name == "step_00000003"
    second = run(dataset, tmp_path / "split", train__max_steps=6)
    assert second["status"] == "completed" and second["step"] == 6
    straight, split = h.losses(tmp_path / "straight"), h.losses(tmp_path / "split")
    assert straight.keys() == split.keys() == set(range(1, 7))
    for step in straight:
        assert split[step] == pytest.approx(straight[step], rel=1e-6, abs=1e-7), step
    assert h.samples(tmp_path / "split") == h.samples(tmp_path / "straight")  # no batch repeated or skipped
    assert_states_close(h.trainable_state(tmp_path / "straight"), h.trainable_state(tmp_path / "split"), atol=1e-7)


def test_sigkill_while_saving_keeps_the_previous_checkpoint(dataset, tmp_path):
    out = tmp_path / "killed"
    flag = tmp_path / "blocked"
    env = {**os.environ, "ILA_TEST_BLOCK_SAVE_AT": "3", "ILA_TEST_BLOCK_FLAG": str(flag)}
    cmd = [sys.executable, str(Path(__file__).parent / "train_blocking_save.py"), str(out),
           f"data.root={dataset}", "train.checkpoint_every_steps=1", "train.max_steps=5", "train.keep_last=2"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 300
    while not flag.exists():
        assert proc.poll() is None, proc.stdout.read()[-3000:]
        assert time.time() < deadline, "the save never reached the blocking point"
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    partial = out / "checkpoints" / ".tmp_step_00000003"
    assert (partial / ".metadata").is_file() and not (partial / "COMPLETE").exists()  # killed mid-save
    assert [p.name for p in complete_checkpoints(out)] == ["step_00000001", "step_00000002"]
    assert latest_checkpoint(out).name == "step_00000002"
    summary = run(dataset, out, train__checkpoint_every_steps=1, train__max_steps=5, train__keep_last=2)
    assert summary["status"] == "completed" and summary["step"] == 5
    assert not partial.exists()
    assert [p.name for p in complete_checkpoints(out)] == ["step_00000004", "step_00000005"]
    # the resumed run continued from step 2: it logged steps 3..5 after the killed run's 1..3
    steps = [s for s, _, _ in h.samples(out)]
    assert steps == sorted(steps) and steps[-1] == 4


# ---------------------------------------------------------------- non-finite steps

def test_non_finite_steps_are_skipped_counted_and_stop_the_run(dataset, tmp_path, monkeypatch):
    import ila_fast.data as data

    real = data.soft_target_cross_entropy
    calls = {"n": 0}

    def nan_on_second_step(logits, target):  # 2 micro-steps per step: calls 3 and 4 are step 2
        calls["n"] += 1
        loss = real(logits, target)
        return loss * float("nan") if calls["n"] in (3, 4) else loss

    monkeypatch.setattr(data, "soft_target_cross_entropy", nan_on_second_step)
    out = tmp_path / "one_bad"
    summary = run(dataset, out, train__max_steps=3, train__checkpoint_every_steps=1)
    assert summary["status"] == "completed" and summary["skipped_steps"] == 1
    from ila_fast.train.checkpoint import load_model_state

    s1, _ = load_model_state(out / "checkpoints" / "step_00000001")
    s2, _ = load_model_state(out / "checkpoints" / "step_00000002")
    s3, _ = load_model_state(out / "checkpoints" / "step_00000003")
    for k in s1:  # the skipped step changed nothing: weights and BN statistics as after step 1
        assert torch.equal(s1[k], s2[k]), k
    assert any(not torch.equal(s2[k], s3[k]) for k in s2 if "message_" in k)
    assert all(torch.isfinite(v).all() for v in s3.values() if v.is_floating_point())

    monkeypatch.setattr(data, "soft_target_cross_entropy", lambda lg, t: real(lg, t) * float("nan"))
    with pytest.raises(UserError, match="3 optimizer steps in a row had a non-finite loss"):
        run(dataset, tmp_path / "all_bad", train__max_steps=8, train__max_bad_steps=3)


# ---------------------------------------------------------------- compile and export

def test_compiled_training_matches_eager(dataset, tmp_path):
    run(dataset, tmp_path / "eager", train__max_steps=2)
    run(dataset, tmp_path / "compiled", train__max_steps=2, train__compile=True)
    eager, compiled = h.losses(tmp_path / "eager"), h.losses(tmp_path / "compiled")
    for step in eager:
        assert compiled[step] == pytest.approx(eager[step], rel=2e-3)
    assert_states_close(h.trainable_state(tmp_path / "eager"), h.trainable_state(tmp_path / "compiled"), atol=2e-3)


def test_exported_model_gives_the_checkpoint_logits(dataset, tmp_path):
    from ila_fast.model.convert import load_checkpoint
    from ila_fast.train import distributed
    from ila_fast.train.export import export_model

    out = tmp_path / "run"
    run(dataset, out, train__max_steps=2)
    export_model(out, tmp_path / "model.pth")
    exported = load_checkpoint(tmp_path / "model.pth").eval()
    from ila_fast.data import read_labels

    # the file carries the run's class names: the text head scores them with no label CSV
    assert exported.class_names == read_labels(dataset / "labels.csv")
    # the reference: the trainer's own FSDP model, restored from the checkpoint by DCP
    trainer = Trainer(h.tiny_config(dataset, train__max_steps=2), out)
    env = distributed.setup_distributed(None)
    try:
        trainer._build(env)
        trainer._resume(env)
        assert trainer.step == 2
        trainer.model.eval()
        video = torch.randn(3, 4, 3, 64, 64, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            expected = trainer.model(video).logits
            got = exported(video).logits
    finally:
        distributed.teardown_distributed()
    assert torch.allclose(got, expected, atol=1e-5), (got - expected).abs().max()
    assert not torch.allclose(expected, torch.zeros_like(expected))


def test_total_batch_larger_than_an_epoch_is_refused(dataset, tmp_path):
    with pytest.raises(UserError, match="less than one optimizer step"):
        run(dataset, tmp_path / "x", train__total_batch=64)


def test_cli_saves_on_sigusr2_and_resumes(dataset, tmp_path):
    out = tmp_path / "cli"
    # room to stop well before the end, however fast the machine: a stop request at the last step
    # is simply a completed run
    values = h.overrides(dataset, train__epochs=20, train__max_steps=40)
    sets = [f'{k}="{v}"' if isinstance(v, str) else f"{k}={str(v).lower() if isinstance(v, bool) else v}"
            for k, v in values.items()]
    cmd = [sys.executable, "-m", "ila_fast.cli", "train", "--config", "tiny", "--output", str(out)]
    cmd += [a for s in sets for a in ("--set", s)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if line.startswith("epoch 0 step 2/"):
            proc.send_signal(signal.SIGUSR2)
    assert proc.wait(timeout=300) == 0, "".join(lines)[-3000:]
    text = "".join(lines)
    assert "SIGUSR2: saving at the next step" in text and "stopped on request after saving step" in text
    import json

    summary = json.loads((out / "summary.json").read_text())
    stopped_at = summary["step"]
    assert summary["status"] == "stopped_on_request" and 2 <= stopped_at < 40
    assert latest_checkpoint(out).name == f"step_{stopped_at:08d}"
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert f"resumed from {latest_checkpoint(out).parent / f'step_{stopped_at:08d}'}" in again.stdout
    assert json.loads((out / "summary.json").read_text())["step"] == 40
