"""Both backends on generated videos: frame indices (painted patterns), shapes, normalisation,
rotation, CPU / DALI pixel parity, resume. DALI runs on the CPU here (VP9 only)."""
import numpy as np
import pytest
import torch
from ila_fast.data.loader import build_loader
from video_fixtures import S, T, fixture_videos, read_indices_clip, write_list

from ila_fast.config import PIXEL_MEAN, PIXEL_STD, DataConfig

dali = pytest.importorskip("nvidia.dali", reason="DALI is in the dev extra")

NO_PHOTOMETRIC = dict(color_jitter_p=0.0, grayscale_p=0.0, erasing_p=0.0, mixup_alpha=0.0, cutmix_alpha=0.0)


def loader_for(names, backend, mode="train", batch_size=4, num_workers=0, **overrides):
    v = fixture_videos()
    lst = write_list(v["root"], names, v)
    overrides.setdefault("cpu_decoder", "pyav")  # the pixel-parity reference; torchcodec is tested apart
    cfg = DataConfig(root=str(v["root"]), train_list=str(lst), batch_size=batch_size, num_workers=num_workers,
                     dali_device="cpu", max_bad_fraction=1.0, **overrides)
    return build_loader(cfg, "train", frames=T, input_size=S, num_classes=2, backend=backend, mode=mode)


BACKENDS = [("cpu", "painted_vp9"), ("cpu", "painted_h264"), ("dali", "painted_vp9")]


@pytest.mark.parametrize("backend,video", BACKENDS)
@pytest.mark.parametrize("mode", ["train", "test"])
def test_frame_indices_through_painted_patterns(backend, video, mode):
    # full-height crops (scale 1) keep every band; no photometric change
    loader = loader_for([video] * 4, backend, mode, crop_scales=[1.0], **NO_PHOTOMETRIC)
    checked = 0
    for batch in loader:
        assert batch.video.shape[1:] == (T, 3, S, S) and batch.video.dtype == torch.float32
        for clip, spec in zip(batch.video, batch.specs):
            assert read_indices_clip(clip) == list(spec.frames)
            checked += 1
    assert checked == (4 if mode == "train" else 4 * 12)


def test_cpu_workers_send_uint8_clips_that_the_loader_finishes():
    """The CPU backend's workers send resized uint8 clips (a quarter of float32's bytes); the loader's
    colour / normalisation / rotation / erasing of them equals the whole transform run on one clip."""
    from ila_fast.data.cpu_backend import decode_clip
    from ila_fast.data.decode import make_decoder

    loader = loader_for(["painted_h264", "rotated", "vfr", "odd_size"], "cpu", "train", num_workers=1,
                        color_jitter_p=1.0, erasing_p=1.0, mixup_alpha=0.0, cutmix_alpha=0.0)
    raw = next(iter(loader.backend.epoch(0)))
    assert raw["video"].dtype == torch.uint8 and raw["video"].shape[1:] == (T, 3, S, S)
    batch = next(iter(loader))
    dec = make_decoder(loader.backend.decoder)
    for clip, spec in zip(batch.video, batch.specs):
        info = loader.backend.infos[spec.video]
        alone = decode_clip(dec, loader.backend.paths[spec.video], spec, info, S, False)
        assert torch.equal(clip, alone), spec.video
    assert any(s.quarter_turns for s in batch.specs) and all(s.augment.erase for s in batch.specs)


@pytest.mark.parametrize("video", ["painted_vp9", "painted_h264", "vfr", "odd_size", "rotated"])
def test_torchcodec_frame_indices(video):
    from ila_fast.data.decode import torchcodec_available

    if not torchcodec_available():
        pytest.skip("torchcodec is not installed (optional; needs system FFmpeg libraries)")
    loader = loader_for([video] * 4, "cpu", "test", crop_scales=[1.0], cpu_decoder="torchcodec", **NO_PHOTOMETRIC)
    assert loader.backend.decoder_name == "torchcodec"
    for batch in loader:
        for clip, spec in zip(batch.video, batch.specs):
            upright = torch.rot90(clip, -spec.quarter_turns, dims=(-2, -1))
            assert read_indices_clip(upright) == list(spec.frames)


@pytest.mark.parametrize("backend", ["cpu", "dali"])
def test_normalisation(backend):
    batch = next(iter(loader_for(["painted_vp9"] * 4, backend, "val", **NO_PHOTOMETRIC)))
    x = batch.video[0]  # a val clip: band b of frame i is white when bit b of its index is set
    mean, std = torch.tensor(PIXEL_MEAN).view(3, 1), torch.tensor(PIXEL_STD).view(3, 1)
    for clip_frame, index in zip(x, batch.specs[0].frames):
        for b in range(6):
            row = clip_frame[:, int((b + 0.5) * S / 6), 4:-4]  # (3, W)
            level = 255.0 if (index >> b) & 1 else 0.0
            assert torch.allclose(row * std + mean, torch.full_like(row, level), atol=4.0)


@pytest.mark.parametrize("backend", ["cpu", "dali"])
def test_rotation_metadata_is_applied(backend):
    # rotated.webm is painted_vp9 with a 90 degree display rotation: the bands become vertical
    loader = loader_for(["rotated"] * 4, backend, "val", **NO_PHOTOMETRIC)
    batch = next(iter(loader))
    assert batch.specs[0].quarter_turns == 1
    for clip, spec in zip(batch.video, batch.specs):
        upright = torch.rot90(clip, -1, dims=(-2, -1))  # undo: bands horizontal again
        assert read_indices_clip(upright) == list(spec.frames)


def test_cpu_and_dali_agree_with_every_augmentation():
    """Same plan, same pixels: crop, resize, jitter, grayscale, normalise, rotation, erasing. The per-clip
    colour map (an affine map, so a level of decoder difference stays a level); the recipe's per-frame
    jitter on 8-bit levels: tests/test_recipe_backends.py."""
    names = ["motion_vp9_0", "motion_vp9_1", "motion_mjpeg", "rotated", "odd_size", "vfr"] * 2
    kw = dict(mixup_alpha=0.0, cutmix_alpha=0.0, color_jitter_p=1.0, grayscale_p=0.3, erasing_p=0.5,
              color_jitter="per_clip")
    cpu = list(loader_for(names, "cpu", batch_size=4, **kw))
    dal = list(loader_for(names, "dali", batch_size=4, **kw))
    assert len(cpu) == len(dal) == 3
    std = torch.tensor(PIXEL_STD).view(1, 1, 3, 1, 1)
    diffs = []
    for a, b in zip(cpu, dal):
        assert a.specs == b.specs
        diffs.append(((a.video - b.video).abs() * std).flatten())
    diff = torch.cat(diffs)
    print(f"\nCPU vs DALI(cpu), 0-255 levels: max {diff.max():.3f}, mean {diff.mean():.4f}, "
          f"p99.9 {diff.quantile(0.999):.3f}")
    assert diff.max() <= 3.0 and diff.mean() <= 0.05  # measured: max 1.85, mean 0.002


@pytest.mark.parametrize("backend", ["cpu", "dali"])
def test_resume_mid_epoch_repeats_no_batch(backend):
    names = ["motion_vp9_0", "motion_vp9_1", "motion_vp9_2", "painted_vp9"] * 3
    full = list(loader_for(names, backend, batch_size=3))
    assert len(full) == 4
    resumed = loader_for(names, backend, batch_size=3)
    resumed.load_state_dict({"epoch": 0, "step": 2, "seed": 0})
    rest = list(resumed)
    assert [b.specs for b in rest] == [b.specs for b in full[2:]]
    for a, b in zip(rest, full[2:]):
        assert torch.equal(a.video, b.video) and torch.equal(a.target, b.target)
    assert resumed.state_dict() == {"epoch": 1, "step": 0, "seed": 0}


def test_training_batches_are_mixed_with_smoothed_targets():
    names = ["motion_vp9_0", "motion_vp9_1", "motion_vp9_2", "painted_vp9"] * 2
    loader = loader_for(names, "cpu", batch_size=4, mix_p=1.0)
    for batch in loader:
        assert batch.target.shape == (4, 2)
        assert torch.allclose(batch.target.sum(1), torch.ones(4))
        assert batch.target.min() >= 0.1 / 2 - 1e-6  # label smoothing 0.1 over 2 classes


def test_cpu_workers_match_in_process():
    names = ["motion_vp9_0", "motion_h264_0", "painted_h264", "motion_vp9_1"] * 2
    a = list(loader_for(names, "cpu", num_workers=0))
    b = list(loader_for(names, "cpu", num_workers=2))
    for x, y in zip(a, b):
        assert torch.equal(x.video, y.video)
    assert np.array_equal(np.concatenate([x.position for x in a]), np.arange(8))


@pytest.mark.parametrize("backend", ["cpu", "dali"])
def test_evaluation_keeps_the_last_partial_batch(backend):
    names = ["painted_vp9", "motion_vp9_0", "motion_vp9_1", "rotated", "odd_size"]
    batches = list(loader_for(names, backend, "val", **NO_PHOTOMETRIC))
    assert [b.video.shape[0] for b in batches] == [4, 1]
    assert torch.cat([b.video_index for b in batches]).tolist() == [0, 1, 2, 3, 4]  # every video scored once
