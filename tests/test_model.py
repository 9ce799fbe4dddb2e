"""The model against CLIP itself (open_clip), weight loading and the official converter.

The float64 rendering of the spec lives in test_model_spec.py; here: a fresh ILA model is
exactly CLIP, the ILA branch is live once trained, what trains is spec 3.4, and weights
round-trip through every supported file format.
"""
import re

import pytest
import torch
from torch import nn

from ila_fast.compat import import_open_clip
from ila_fast.config import ModelConfig
from ila_fast.model import ILAModel, build_model, count_parameters, is_trainable
from ila_fast.model.convert import (convert_official, infer_config, load_checkpoint, load_official,
                                    save_checkpoint)
from ila_fast.model.weights import WeightsError, load_clip_weights

TINY = dict(arch="tiny", input_size=64, frames=3, correlation_channels=32, num_classes=5)


def tiny_clip():
    """A randomly initialised open_clip CLIP with the "tiny" arch's shapes."""
    open_clip = import_open_clip()
    torch.manual_seed(0)
    return open_clip.model.CLIP(
        embed_dim=64, quick_gelu=True,
        vision_cfg=dict(layers=2, width=64, head_width=32, patch_size=16, image_size=64),
        text_cfg=dict(context_length=77, vocab_size=49408, width=64, heads=1, layers=1)).eval()


def clip_frame_features(clip, video):
    b, t = video.shape[:2]
    with torch.no_grad():
        return clip.encode_image(video.flatten(0, 1)).view(b, t, -1)


@pytest.fixture(scope="module")
def clip_file(tmp_path_factory):
    clip = tiny_clip()
    path = tmp_path_factory.mktemp("clip") / "tiny_clip.pt"
    torch.save({"state_dict": {"module." + k: v for k, v in clip.state_dict().items()}}, path)
    return clip, path


def torchscript_archive(state: dict, path):
    """Write ``state`` as a TorchScript archive, the format of OpenAI's CLIP files."""
    root = nn.Module()
    for key, value in {**state, "input_resolution": torch.tensor(64)}.items():
        *parents, leaf = key.split(".")
        node = root
        for name in parents:
            if not hasattr(node, name):
                node.add_module(name, nn.Module())
            node = getattr(node, name)
        node.register_buffer(leaf, value.clone())
    torch.jit.script(root).save(str(path))


@pytest.mark.parametrize("dataset", ["k400", "ssv2"])
def test_fresh_ila_model_is_exactly_clip_then_branch_goes_live(clip_file, dataset):
    clip, path = clip_file
    model = build_model(ModelConfig(**{**TINY, "dataset": dataset}), clip_weights=path)
    video = torch.randn(2, 3, 3, 64, 64)
    expected = clip_frame_features(clip, video)
    model.eval()
    with torch.no_grad():
        frames, _, _ = model.encode_frames(video)
    assert torch.equal(frames, expected)  # zero-initialised residuals: bit-exact CLIP

    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(3):
        out = model(video)
        loss = out.logits.logsumexp(-1).mean() - out.logits[:, 0].mean() + out.aux_loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        frames, _, _ = model.encode_frames(video)
    assert (frames - expected).abs().max() > 1e-3  # the ILA branch now changes the features
    # ... while CLIP's own weights did not move.
    for key, value in clip.state_dict().items():
        if key.startswith("visual."):
            assert torch.equal(model.state_dict()[key], value), key


def test_trainable_set_is_spec_3_4():
    model = ILAModel(ModelConfig(**TINY))
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    block = re.compile(r"visual\.transformer\.resblocks\.\d+\.")
    for name in trainable:
        rest = block.sub("", name)
        assert rest.startswith(("message_", "temporal_")) or name.startswith("mit."), name
    for name in frozen:  # CLIP image/text towers and the prompt generator
        assert name.startswith(("visual.", "token_embedding", "positional_embedding", "transformer.", "ln_final",
                                "text_projection", "logit_scale", "prompt_")), name
        assert not block.sub("", name).startswith(("message_", "temporal_")), name
    assert any(n.startswith("prompt_generator.") for n in frozen)
    assert any(n.endswith("message_ila.dw_conv.weight") for n in trainable)
    assert "mit.positional_embedding" in trainable
    assert all(is_trainable(n) == (n in trainable) for n in trainable | frozen)
    ssv2 = ILAModel(ModelConfig(**{**TINY, "dataset": "ssv2"}))
    assert {n for n, p in ssv2.named_parameters() if p.requires_grad and n.startswith("classifier.")} == {
        "classifier.0.weight", "classifier.0.bias", "classifier.2.weight", "classifier.2.bias"}


def test_official_b16_parameter_count():
    """Spec section 7: the official K400 ViT-B/16 8-frame model has 199,940,401 parameters."""
    with torch.device("meta"):
        model = ILAModel(ModelConfig(arch="ViT-B/16", dataset="k400", frames=8))
    total, trainable = count_parameters(model)
    assert total == 199_940_401
    assert trainable == 43_621_680


@pytest.mark.parametrize("fmt", ["torchscript", "state_dict"])
def test_clip_loading_round_trip(clip_file, tmp_path, fmt):
    clip, _ = clip_file
    path = tmp_path / f"clip_{fmt}.pt"
    if fmt == "torchscript":
        torchscript_archive(clip.state_dict(), path)
    else:
        torch.save(clip.state_dict(), path)
    model = ILAModel(ModelConfig(**TINY)).eval()
    report = load_clip_weights(model, path)
    assert "input_resolution" not in report["unused"]
    video = torch.randn(1, 3, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model.encode_frames(video)[0], clip_frame_features(clip, video))
        tokens = model.class_tokens[:2]
        # open_clip masks attention its own way: equal to float rounding, not bit for bit
        torch.testing.assert_close(model.encode_text(tokens), clip.encode_text(tokens), atol=1e-6, rtol=1e-6)
    # the cached class text features were refreshed from the loaded text tower
    with torch.no_grad():
        assert torch.allclose(model.text_features, clip.encode_text(model.class_tokens), atol=1e-6)


def test_clip_loading_refuses_wrong_arch(clip_file):
    _, path = clip_file
    with pytest.raises(WeightsError, match="another shape"):
        load_clip_weights(ILAModel(ModelConfig(**{**TINY, "input_size": 96})), path)
    with pytest.raises(WeightsError, match="not found"):
        load_clip_weights(ILAModel(ModelConfig(**TINY)), path.parent / "nope.pt")


# ------------------------------------------------------------ official checkpoints
def official_layout(width, layers, grid, patch, embed, frames, text_width, text_layers, dataset, channels=256,
                    classes=174):
    """Names and shapes of an official checkpoint, written out from docs/specification.md#7-official-checkpoint-layout."""
    d, c, e = width, channels, embed
    shapes = {"visual.class_embedding": (d,), "visual.positional_embedding": (grid * grid + 1, d),
              "visual.conv1.weight": (d, 3, patch, patch), "visual.proj": (d, e)}
    for ln in ("visual.ln_pre", "visual.ln_post"):
        shapes.update({f"{ln}.weight": (d,), f"{ln}.bias": (d,)})

    def clip_block(prefix, w):
        out = {f"{prefix}attn.in_proj_weight": (3 * w, w), f"{prefix}attn.in_proj_bias": (3 * w,),
               f"{prefix}attn.out_proj.weight": (w, w), f"{prefix}attn.out_proj.bias": (w,),
               f"{prefix}mlp.c_fc.weight": (4 * w, w), f"{prefix}mlp.c_fc.bias": (4 * w,),
               f"{prefix}mlp.c_proj.weight": (w, 4 * w), f"{prefix}mlp.c_proj.bias": (w,)}
        for ln in ("ln_1", "ln_2"):
            out.update({f"{prefix}{ln}.weight": (w,), f"{prefix}{ln}.bias": (w,)})
        return out

    def bn(prefix, n):
        return {f"{prefix}.weight": (n,), f"{prefix}.bias": (n,), f"{prefix}.running_mean": (n,),
                f"{prefix}.running_var": (n,), f"{prefix}.num_batches_tracked": ()}

    for i in range(layers):
        p = f"visual.transformer.resblocks.{i}."
        shapes.update(clip_block(p, d))
        for fc in ("message_fc", "temporal_skip_fc", "temporal_skip_align_fc"):
            shapes.update({f"{p}{fc}.weight": (d, d), f"{p}{fc}.bias": (d,)})
        shapes.update({f"{p}message_ln.weight": (d,), f"{p}message_ln.bias": (d,)})
        a = p + "message_attn."
        if dataset == "k400":
            shapes.update({f"{a}interactive_block.0.depthwise_conv.0.weight": (2 * d, 1, 3, 3),
                           f"{a}interactive_block.0.depthwise_conv.0.bias": (2 * d,),
                           f"{a}interactive_block.0.pointwise_conv.0.weight": (c, 2 * d, 1, 1),
                           f"{a}interactive_block.0.pointwise_conv.0.bias": (c,),
                           f"{a}interactive_block.1.weight": (c, c, 3, 3), f"{a}interactive_block.1.bias": (c,)})
            shapes.update(bn(f"{a}interactive_block.0.depthwise_conv.1", 2 * d))
            shapes.update(bn(f"{a}interactive_block.0.pointwise_conv.1", c))
            shapes.update(bn(f"{a}interactive_block.2", c))
        else:
            shapes.update({f"{a}interactive_block.0.weight": (c, 2 * d, 3, 3), f"{a}interactive_block.0.bias": (c,),
                           f"{a}interactive_block.3.weight": (c, c, 3, 3), f"{a}interactive_block.3.bias": (c,)})
            shapes.update(bn(f"{a}interactive_block.1", c))
            shapes.update(bn(f"{a}interactive_block.4", c))
        h = c // 2
        shapes.update({f"{a}prediction_block.0.weight": (h, c, 3, 3), f"{a}prediction_block.0.bias": (h,),
                       f"{a}prediction_block.4.weight": (h, h, 3, 3), f"{a}prediction_block.4.bias": (h,),
                       f"{a}prediction_block.10.weight": (h // 2, h // 2, 1), f"{a}prediction_block.10.bias": (h // 2,),
                       f"{a}prediction_block.12.weight": (4, h // 4, 1), f"{a}prediction_block.12.bias": (4,),
                       f"{a}conv.weight": (h, h, 3, 1, 1), f"{a}conv.bias": (h,),
                       f"{a}fc.weight": (d, h), f"{a}fc.bias": (d,)})
        shapes.update(bn(f"{a}prediction_block.1", h))
        shapes.update(bn(f"{a}prediction_block.5", h))
    shapes["mit.positional_embedding"] = (1, frames, e)
    shapes.update(clip_block("mit.resblocks.0.", e))
    if dataset == "ssv2":
        shapes.update({"mit.classify_head.0.weight": (e,), "mit.classify_head.0.bias": (e,),
                       "mit.classify_head.2.weight": (classes, e), "mit.classify_head.2.bias": (classes,)})
        return shapes
    shapes.update({"prompts_visual_ln.weight": (d,), "prompts_visual_ln.bias": (d,), "prompts_visual_proj": (d, e),
                   "prompts_generator.norm.weight": (e,), "prompts_generator.norm.bias": (e,),
                   "prompts_generator.alpha": (e,)})
    for j in range(2):
        g = f"prompts_generator.decoder.{j}."
        shapes.update({f"{g}cross_attn.{n}_proj.weight": (e, e) for n in "qkv"})
        shapes.update({f"{g}cross_attn.proj.weight": (e, e), f"{g}cross_attn.proj.bias": (e,),
                       f"{g}mlp.0.weight": (4 * e, e), f"{g}mlp.0.bias": (4 * e,),
                       f"{g}mlp.3.weight": (e, 4 * e), f"{g}mlp.3.bias": (e,)})
        for n in ("norm1", "norm3"):
            shapes.update({f"{g}{n}.weight": (e,), f"{g}{n}.bias": (e,)})
    shapes.update({"token_embedding.weight": (49408, text_width), "positional_embedding": (77, text_width),
                   "ln_final.weight": (text_width,), "ln_final.bias": (text_width,),
                   "text_projection": (text_width, e), "logit_scale": ()})
    for i in range(text_layers):
        shapes.update(clip_block(f"transformer.resblocks.{i}.", text_width))
    return shapes


def random_official(shapes, seed=0):
    g = torch.Generator().manual_seed(seed)
    state = {}
    for k, shape in shapes.items():
        if k.endswith("num_batches_tracked"):
            state[k] = torch.randint(0, 100, (), generator=g)
        elif k.endswith("running_var"):
            state[k] = torch.rand(shape, generator=g) + 0.5
        else:
            state[k] = torch.randn(shape, generator=g) * 0.05
    return state


SMALL = dict(width=64, layers=2, grid=4, patch=8, embed=64, frames=3, text_width=64, text_layers=1)


@pytest.mark.parametrize("dataset", ["k400", "ssv2"])
def test_official_conversion_round_trip(tmp_path, dataset):
    official = random_official(official_layout(**SMALL, dataset=dataset, channels=32, classes=7))
    path = tmp_path / "official.pth"
    torch.save({"model": {"module." + k: v for k, v in official.items()}, "epoch": 31}, path)
    model, report = convert_official(path)
    cfg = report["config"]
    assert (cfg.arch, cfg.width, cfg.layers, cfg.patch_size, cfg.input_size, cfg.frames) == ("custom", 64, 2, 8, 32, 3)
    assert cfg.dataset == dataset and cfg.interactive == ("depthwise" if dataset == "k400" else "dense")
    assert cfg.correlation_channels == 32 and report["mapped"] == len(official)
    sd = model.state_dict()
    blk = "visual.transformer.resblocks.1."
    pairs = {"visual.conv1.weight": "visual.conv1.weight",
             f"{blk}temporal_align_fc.weight": f"{blk}temporal_skip_align_fc.weight",
             f"{blk}message_ila.point_head.fc2.weight": f"{blk}message_attn.prediction_block.12.weight",
             f"{blk}message_ila.point_head.bn2.running_var": f"{blk}message_attn.prediction_block.5.running_var",
             f"{blk}message_ila.temporal_conv.weight": f"{blk}message_attn.conv.weight"}
    if dataset == "k400":
        pairs.update({f"{blk}message_ila.dw_conv.weight": f"{blk}message_attn.interactive_block.0.depthwise_conv.0.weight",
                      f"{blk}message_ila.conv.bias": f"{blk}message_attn.interactive_block.1.bias",
                      "prompt_generator.layers.1.cross_attn.out_proj.weight": "prompts_generator.decoder.1.cross_attn.proj.weight",
                      "logit_scale": "logit_scale"})
    else:
        pairs.update({f"{blk}message_ila.dense_bn.weight": f"{blk}message_attn.interactive_block.1.weight",
                      f"{blk}message_ila.bn.bias": f"{blk}message_attn.interactive_block.4.bias",
                      "classifier.2.weight": "mit.classify_head.2.weight"})
    for ours, theirs in pairs.items():
        assert torch.equal(sd[ours], official[theirs]), ours
    # Every official tensor landed somewhere, unchanged: compare as multisets of values.
    ours_sums = sorted(float(v.double().sum()) for k, v in sd.items() if not k.endswith(".delta"))
    assert ours_sums == sorted(float(v.double().sum()) for v in official.values())
    # delta follows the schedule for the epoch after the checkpoint's (epoch 31 -> 32: 0.2 / 8)
    assert float(sd[f"{blk}message_ila.delta"]) == pytest.approx(0.2 / 8)
    # ila-fast's own file round-trips exactly, config included
    save_checkpoint(model, tmp_path / "ours.pth")
    again = load_checkpoint(tmp_path / "ours.pth")
    assert again.cfg == model.cfg
    assert all(torch.equal(v, again.state_dict()[k]) for k, v in sd.items())


@pytest.mark.parametrize("change", ["missing", "extra", "shape"])
def test_official_conversion_refuses_mismatch(tmp_path, change):
    official = random_official(official_layout(**SMALL, dataset="k400", channels=32))
    key = "visual.transformer.resblocks.0.message_attn.prediction_block.4.bias"
    if change == "missing":
        del official[key]
    elif change == "extra":
        official["visual.transformer.resblocks.0.message_attn.extra_conv.weight"] = torch.zeros(3)
    else:
        official[key] = torch.zeros(5)
    path = tmp_path / "bad.pth"
    torch.save({"model": official}, path)
    with pytest.raises(WeightsError) as e:
        convert_official(path)
    assert str(path) in str(e.value)
    assert ("prediction_block.4.bias" if change != "extra" else "extra_conv.weight") in str(e.value)


def test_official_conversion_checks_the_given_config(tmp_path):
    official = random_official(official_layout(**SMALL, dataset="ssv2", channels=32, classes=7))
    path = tmp_path / "o.pth"
    torch.save({"model": official}, path)
    inferred = infer_config(official)
    model = load_official(path, inferred)
    assert model.cfg.num_classes == 7
    wrong = ModelConfig(**{**inferred.__dict__, "frames": 8})
    with pytest.raises(WeightsError, match="frames: config 8, checkpoint 3"):
        load_official(path, wrong)


def test_convert_cli(tmp_path, capsys):
    from ila_fast.cli import main

    official = random_official(official_layout(**SMALL, dataset="ssv2", channels=32, classes=7))
    torch.save({"model": official}, tmp_path / "o.pth")
    assert main(["convert", str(tmp_path / "o.pth"), str(tmp_path / "ours.pth")]) == 0
    assert "converted" in capsys.readouterr().out
    assert load_checkpoint(tmp_path / "ours.pth").cfg.num_classes == 7
    del official["mit.positional_embedding"]
    torch.save({"model": official}, tmp_path / "bad.pth")
    assert main(["convert", str(tmp_path / "bad.pth"), str(tmp_path / "x.pth")]) == 2  # a user error
    assert "mit.positional_embedding" in capsys.readouterr().err
    assert not (tmp_path / "x.pth").exists()


def test_delta_schedule_is_model_state():
    model = ILAModel(ModelConfig(**TINY))
    deltas = []
    for epoch in (0, 29, 30, 31, 35):
        model.set_epoch(epoch)
        deltas.append(float(model.visual.transformer.resblocks[0].message_ila.delta))
    assert deltas == pytest.approx([0.2, 0.2, 0.1, 0.05, 0.2 / 64])
    state = model.state_dict()
    fresh = ILAModel(ModelConfig(**TINY))
    fresh.load_state_dict(state)
    assert float(fresh.visual.transformer.resblocks[1].message_ila.delta) == pytest.approx(0.2 / 64)
