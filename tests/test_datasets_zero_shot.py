"""Zero-shot / cross-dataset evaluation: a tiny text-head model scores a miniature UCF101 (official split files,
real AVI videos) by the bundled UCF101 names; the text features follow the label set and the prompt templates;
and the refusals that keep a run from training on nonsense (random start, placeholder class names)."""
from __future__ import annotations

import json

import pytest
import torch

import dataset_layouts as layouts
import spec_reference as spec
from ila_fast.cli import main
from ila_fast.config import ModelConfig, load_config
from ila_fast.data.datasets import bundled_names, video_files
from ila_fast.errors import UserError
from ila_fast.model import ILAModel
from ila_fast.model.convert import save_checkpoint
from ila_fast.train.start_checks import check_start

pytest.importorskip("av")
TEXT_HEAD = dict(arch="custom", dataset="k400", frames=2, input_size=32, patch_size=8, width=32, layers=1, heads=1,
                 embed_dim=64, text_width=32, text_heads=1, text_layers=1, context_length=24, correlation_channels=16,
                 num_classes=4)
K400_FOUR = ["abseiling", "air drumming", "archery", "yoga"]


def text_model(**kw) -> ILAModel:
    torch.manual_seed(0)
    return ILAModel(ModelConfig(**{**TEXT_HEAD, **kw}), K400_FOUR)


def reference(model, names, prompts=("{}",)) -> torch.Tensor:
    """float64 text features of ``names``: CLIP's encoder written out, each template's features averaged."""
    from ila_fast.compat import import_open_clip

    sd = {k: v.detach().double() for k, v in model.state_dict().items()}
    tokenizer = import_open_clip().get_tokenizer("ViT-B-16")
    per_template = [spec.encode_text(tokenizer([p.replace("{}", n) for n in names],
                                               context_length=model.cfg.context_length), sd, model.cfg)
                    for p in prompts]
    return torch.stack(per_template).mean(dim=0)


def test_label_set_change_recomputes_the_text_features():
    model = text_model().double()
    calls = []  # the class count of each text-tower batch (100 a batch)
    model.token_embedding.register_forward_pre_hook(lambda module, args: calls.append(args[0].shape[0]))
    k400 = model.prepare_text_features().clone()
    torch.testing.assert_close(k400, reference(model, K400_FOUR), rtol=1e-12, atol=1e-12)
    ucf = bundled_names("ucf101")
    model.set_class_names(ucf, any_count=True)
    assert model.cfg.num_classes == 101 and calls == [4]  # lazy: nothing computed yet
    features = model.prepare_text_features()
    assert calls == [4, 100, 1] and features.shape == (101, 64)
    torch.testing.assert_close(features, reference(model, ucf), rtol=1e-12, atol=1e-12)
    model.set_class_names(K400_FOUR, any_count=True)  # back: computed again, not a stale cache
    torch.testing.assert_close(model.prepare_text_features(), k400, rtol=0, atol=0)
    assert calls == [4, 100, 1, 4]
    with pytest.raises(ValueError, match="got 101 class names for a model with model.num_classes = 4"):
        model.set_class_names(ucf)  # without any_count the count is the model's


def test_prompt_templates_average_their_features():
    prompts = ["a video of {}.", "a person doing {}."]
    model = ILAModel(ModelConfig(**{**TEXT_HEAD, "prompt": prompts}), K400_FOUR).double()
    torch.testing.assert_close(model.prepare_text_features(), reference(model, K400_FOUR, prompts),
                               rtol=1e-12, atol=1e-12)
    single = model.prepare_text_features().clone()
    model.set_class_names(K400_FOUR, prompt="a video of {}.")  # another template: recomputed
    torch.testing.assert_close(model.prepare_text_features(), reference(model, K400_FOUR, prompts[:1]),
                               rtol=1e-12, atol=1e-12)
    assert not torch.allclose(model.prepare_text_features(), single)


def test_zero_shot_eval_on_a_miniature_ucf101(tmp_path, capsys):
    video_files.cache_clear()
    ann, videos = layouts.ucf101(tmp_path / "ucf")
    checkpoint = tmp_path / "k400_tiny.pth"
    save_checkpoint(text_model(), checkpoint)
    out = tmp_path / "zs"
    code = main(["eval", "--checkpoint", str(checkpoint), "--dataset", "ucf101", "--split", "all",
                 "--annotations", str(ann), "--videos", str(videos), "--output", str(out),
                 "--set", "data.backend=cpu", "--set", "data.num_workers=0", "--set", "data.batch_size=2",
                 "--set", "data.test_clips=2", "--set", "data.test_crops=1", "--set", "model.prompt='a video of {}.'"])
    assert code == 0
    printed = capsys.readouterr().out
    summary = json.loads((out / "zero_shot_ucf101.json").read_text())
    assert summary["classes"] == 101 and summary["prompt"] == "a video of {}." and set(summary["splits"]) == {"1", "2", "3"}
    # split 2's test list names v_Archery_g10_c01.avi, which is not on disk: listed, not scored
    assert [(r["scored"], r["listed"]) for r in summary["splits"].values()] == [(2, 2), (1, 2), (2, 2)]
    for split, row in summary["splits"].items():
        report = json.loads((out / f"ucf101_split{split}" / "eval.json").read_text())
        assert report["num_classes"] == 101 and report["views_per_video"] == 2
        assert {c["name"] for c in report["per_class"]} >= {"ApplyEyeMakeup", "YoYo"}
        hits = [v["top5"][0][0] == v["label"] for v in report["per_video"]]
        assert row["top1"] == pytest.approx(sum(hits) / len(hits))
        assert f"split {split}: top-1 {100 * row['top1']:.2f} %" in printed
    mean = sum(r["top1"] for r in summary["splits"].values()) / 3
    assert summary["mean"]["top1"] == pytest.approx(mean)
    assert f"mean over 3 split(s): top-1 {100 * mean:.2f} %" in printed


def test_classifier_model_cannot_score_another_label_set(tmp_path, capsys):
    video_files.cache_clear()
    ann, videos = layouts.ucf101(tmp_path / "ucf")
    checkpoint = tmp_path / "ssv2_tiny.pth"
    torch.manual_seed(0)
    save_checkpoint(ILAModel(ModelConfig(**{**TEXT_HEAD, "dataset": "ssv2"})), checkpoint)
    code = main(["eval", "--checkpoint", str(checkpoint), "--dataset", "ucf101", "--annotations", str(ann),
                 "--videos", str(videos)])
    assert code == 2
    assert "classifier head (model.dataset = 'ssv2') over its own 4 classes: it cannot score ucf101's 101" in \
        capsys.readouterr().err


def test_refusals_of_a_random_start_and_placeholder_names():
    cfg = load_config("k400_b16_8f")
    assert cfg.model.clip_weights is None and cfg.data.labels == "kinetics400"
    with pytest.raises(UserError, match=r"^model.clip_weights is not set: k400_b16_8f would train from random weights"
                                        r".*model.clip_weights = \"random\""):
        check_start(cfg, None, bundled_names("kinetics400"), resuming=False)
    check_start(cfg, "official.pth", bundled_names("kinetics400"), resuming=False)   # --init: weights given
    check_start(cfg, None, bundled_names("kinetics400"), resuming=True)              # the checkpoint's weights
    random = load_config("k400_b16_8f", {"model.clip_weights": "random"})
    check_start(random, None, bundled_names("kinetics400"), resuming=False)
    with pytest.raises(UserError, match=r"model.dataset = 'k400'.*placeholders.*set data.labels"):
        check_start(random, None, None, resuming=False)
    ssv2 = load_config("ssv2_b16_8f", {"model.clip_weights": "random"})
    check_start(ssv2, None, None, resuming=False)  # a classifier head needs no names to train
    for name in ("tiny", "demo"):  # the small configs train from random weights on purpose
        assert load_config(name).model.clip_weights == "random"


def test_train_command_refuses_a_zoo_config_without_weights(tmp_path, capsys):
    listed = tmp_path / "train.txt"
    listed.write_text("a.mp4 0\n")
    code = main(["train", "--config", "k400_b16_8f", "--output", str(tmp_path / "run"),
                 "--set", f"data.train_list={listed}", "--set", f"data.root={tmp_path}"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "model.clip_weights is not set" in err[0]
