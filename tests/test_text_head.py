"""The Kinetics text head's class text features: lazy, computed once, fresh after every change.

The reference is tests/spec_reference.encode_text: CLIP's text encoder written out in float64
over the full context (no cut after the end token), from the state dict alone.
"""
from __future__ import annotations

import warnings

import pytest
import torch

import spec_reference as spec
from ila_fast.config import ConfigError, ModelConfig
from ila_fast.model import ILAModel

# context 16, vocabulary CLIP's: the real BPE tokenizer, a small tower
CFG = dict(arch="custom", dataset="k400", frames=2, input_size=16, patch_size=4, width=32, layers=1, heads=2,
           embed_dim=64, text_width=32, text_heads=2, text_layers=2, context_length=16, correlation_channels=16,
           num_classes=3)
NAMES = ["abseiling", "playing bagpipes", "riding a mechanical bull"]


def model_with_counter(**kw):
    model = ILAModel(ModelConfig(**{**CFG, **kw.pop("cfg", {})}), **kw)
    calls = []  # the token shapes of each text-tower run
    model.token_embedding.register_forward_pre_hook(lambda module, args: calls.append(tuple(args[0].shape)))
    return model, calls


def reference_features(model) -> torch.Tensor:
    sd = {k: v.detach().double() for k, v in model.state_dict().items()}
    return spec.encode_text(model.class_tokens, sd, model.cfg)


def video(model, dtype=torch.float32):
    c = model.cfg
    return torch.randn(2, c.frames, 3, c.input_size, c.input_size, generator=torch.Generator().manual_seed(0),
                       dtype=dtype)


def test_features_are_lazy_computed_once_and_exact():
    torch.manual_seed(0)
    model, calls = model_with_counter(class_names=NAMES)
    assert calls == []  # building runs no text tower
    model = model.double()
    model.eval()
    with torch.no_grad():
        model(video(model, torch.float64))
        model(video(model, torch.float64))
    assert len(calls) == 1 and calls[0][0] == 3  # one batch, once
    # cut after the longest name's end token, yet equal to the full-context float64 reference
    assert calls[0][1] < CFG["context_length"]
    torch.testing.assert_close(model.text_features, reference_features(model), rtol=1e-12, atol=1e-12)
    assert not model.text_features.is_inference()  # usable in autograd-recorded forwards


def test_recomputed_only_when_text_weights_or_names_change():
    torch.manual_seed(0)
    model, calls = model_with_counter(class_names=NAMES)
    model.prepare_text_features()
    assert len(calls) == 1
    state = {k: v.clone() for k, v in model.state_dict().items()}
    model.load_state_dict(state)  # the same weights: nothing to redo
    visual_only = {k: v for k, v in state.items() if k.startswith("visual.")}
    visual_only["visual.proj"] = visual_only["visual.proj"] + 1.0
    model.load_state_dict(visual_only, strict=False)
    model.set_class_names(list(NAMES))
    model.prepare_text_features()
    assert len(calls) == 1
    state["text_projection"] = state["text_projection"] * 2.0
    model.load_state_dict(state)
    assert len(calls) == 1  # lazy: nothing until the features are used
    doubled = model.text_features
    assert len(calls) == 2
    torch.testing.assert_close(doubled.double(), reference_features(model), rtol=1e-5, atol=1e-5)
    model.set_class_names(["a", "b", "c"])
    model.prepare_text_features()
    assert len(calls) == 3
    torch.testing.assert_close(model.text_features.double(), reference_features(model), rtol=1e-5, atol=1e-5)


def test_features_follow_the_model_dtype():
    torch.manual_seed(0)
    model, calls = model_with_counter(class_names=NAMES)
    fp32 = model.prepare_text_features().clone()
    model.to(torch.bfloat16)
    assert model.text_features.dtype == torch.bfloat16 and len(calls) == 1  # cast down, not recomputed
    torch.testing.assert_close(model.text_features.float(), fp32, rtol=1e-2, atol=1e-2)
    model.float()  # back up from bf16: the bf16-rounded features are stale
    assert model.text_features.dtype == torch.float32
    assert len(calls) == 2
    model.double()
    assert model.text_features.dtype == torch.float64 and len(calls) == 3
    torch.testing.assert_close(model.text_features, reference_features(model), rtol=1e-12, atol=1e-12)


def test_prepared_features_are_not_recomputed_in_forward():
    """The trainer prepares them before sharding; forward (train or eval) must then not run the text tower."""
    torch.manual_seed(0)
    model, calls = model_with_counter(class_names=NAMES)
    model.prepare_text_features()
    model.train()
    out = model(video(model))
    (out.logits.sum() + out.aux_loss).backward()
    assert len(calls) == 1
    assert any(p.grad is not None for n, p in model.named_parameters() if n.startswith("mit."))


def test_placeholder_labels_warn_once_at_evaluation():
    torch.manual_seed(0)
    model, _ = model_with_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.train()
        with torch.no_grad():
            model(video(model))
        assert not caught  # no noise per step (the trainer refuses placeholders: train/start_checks.py)
        model.eval()
        with torch.no_grad():
            model(video(model))
            model(video(model))
    assert len(caught) == 1 and "placeholder labels" in str(caught[0].message)
    named, _ = model_with_counter(class_names=NAMES)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with torch.no_grad():
            named.eval()(video(named))


def test_names_the_text_tower_cannot_take_are_refused():
    with pytest.raises(ConfigError, match=r"'abseiling' tokenizes to id \d+, outside .*vocab_size = 1000"):
        ILAModel(ModelConfig(**{**CFG, "vocab_size": 1000}), NAMES)
    with pytest.raises(ConfigError, match="does not fit in model.context_length = 16"):
        ILAModel(ModelConfig(**CFG), ["a b c d e f g h i j k l m n o p q", "x", "y"])
    with pytest.raises(ConfigError, match="got 2 class names .* model.num_classes = 3"):
        ILAModel(ModelConfig(**CFG), NAMES[:2])


def test_meta_build_then_materialised():
    """Built on "meta" (no memory), then to_empty + real weights: tokens and features are redone."""
    with torch.device("meta"):
        model = ILAModel(ModelConfig(**CFG), NAMES)
    model.prepare_text_features()  # on meta: shapes only
    torch.manual_seed(0)
    real = ILAModel(ModelConfig(**CFG), NAMES)
    model.to_empty(device="cpu")
    model.load_state_dict(real.state_dict())
    assert torch.equal(model.class_tokens, real.class_tokens)
    torch.testing.assert_close(model.text_features, real.text_features)
