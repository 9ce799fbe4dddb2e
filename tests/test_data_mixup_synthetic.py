"""Mixup / cutmix / label smoothing, colour maths, and the synthetic motion dataset."""
import math

import numpy as np
import pytest
import torch
from ila_fast.data.augment import color_affine, hsv_matrix, yuv420_to_rgb_planes
from ila_fast.data.dataset import VideoDataset, read_labels
from ila_fast.data.mixup import mix_batch, smooth_one_hot, soft_target_cross_entropy
from ila_fast.data.plan import AugmentParams, MixSpec
from ila_fast.data.synthetic import CLASSES, render_motion

from ila_fast.cli import main as cli_main


def test_label_smoothing():
    t = smooth_one_hot(torch.tensor([0, 2]), 4, 0.1)
    assert torch.allclose(t[0], torch.tensor([0.925, 0.025, 0.025, 0.025]))
    assert torch.allclose(t.sum(1), torch.ones(2))


def test_mixup_and_cutmix():
    video = torch.arange(4.0).view(4, 1, 1, 1, 1).expand(4, 2, 3, 8, 8).contiguous()
    labels = torch.tensor([0, 1, 2, 3])
    mixed, target = mix_batch(video, labels, MixSpec("mixup", 0.7), 4, 0.0)
    assert torch.allclose(mixed[0], torch.full_like(mixed[0], 0.7 * 0 + 0.3 * 3))
    assert torch.allclose(target[0], torch.tensor([0.7, 0, 0, 0.3]))
    mixed, target = mix_batch(video, labels, MixSpec("cutmix", 1 - 16 / 64, (2, 6, 0, 4)), 4, 0.1)
    assert (mixed[1, :, :, 2:6, 0:4] == 2).all() and (mixed[1, :, :, :2] == 1).all()   # partner of 1 is 2
    assert torch.allclose(target.sum(1), torch.ones(4))
    assert torch.allclose(target[1], 0.75 * smooth_one_hot(labels, 4, 0.1)[1] + 0.25 * smooth_one_hot(labels, 4, 0.1)[2])
    assert torch.equal(mix_batch(video, labels, MixSpec("none"), 4)[0], video)
    loss = soft_target_cross_entropy(torch.zeros(4, 4), target)
    assert loss.item() == pytest.approx(math.log(4))


def test_colour_maths():
    # grayscale = luma replicated (YIQ's Y row); identity parameters = identity map
    m, t = color_affine(AugmentParams(grayscale=True))
    rgb = np.array([200.0, 100.0, 50.0])
    y = 0.299 * 200 + 0.587 * 100 + 0.114 * 50
    assert np.allclose(m @ rgb + t, np.full(3, y), atol=0.5)
    m, t = color_affine(AugmentParams())
    assert np.allclose(m, np.eye(3), atol=1e-6) and np.allclose(t, 0, atol=1e-4)
    assert np.allclose(hsv_matrix(360.0, 1.0), np.eye(3), atol=1e-9)
    # contrast pivots on 128, brightness scales
    m, t = color_affine(AugmentParams(brightness=1.0, contrast=0.5))
    assert np.allclose(m @ np.full(3, 128.0) + t, 128.0, atol=0.1)
    # BT.601 limited range: black, white, and a saturated red
    y, u, v = (np.array(c, np.uint8).reshape(1, 1, 1).repeat(2, 1).repeat(2, 2) for c in (16, 128, 128))
    assert (yuv420_to_rgb_planes(y, u[:, :1, :1], v[:, :1, :1]) == 0).all()
    red = yuv420_to_rgb_planes(np.full((1, 2, 2), 81, np.uint8), np.full((1, 1, 1), 90, np.uint8),
                               np.full((1, 1, 1), 240, np.uint8))
    assert red.shape == (1, 3, 2, 2) and np.abs(red[0, :, 0, 0].numpy() - [255, 0, 0]).max() <= 2


def test_synthetic_pairs_differ_only_in_time_order():
    # the backward class of a pair is the forward clip reversed: same set of frames
    for motion in ("translate_x", "rotate", "scale"):
        clip = render_motion(motion, 8, 24, 32, np.random.default_rng(3))
        assert clip.shape == (8, 24, 32, 3) and clip.dtype == np.uint8
        assert not np.array_equal(clip[0], clip[-1])
    motions = {}
    for name, motion, backwards in CLASSES:
        motions.setdefault(motion, []).append(backwards)
    assert all(sorted(v) == [False, True] for v in motions.values()) and len(CLASSES) == 8


@pytest.mark.parametrize("codec,ext", [("h264", "mp4"), ("vp9", "webm")])
def test_make_synthetic_cli(tmp_path, codec, ext):
    out = tmp_path / "syn"
    assert cli_main(["make-synthetic", "--out", str(out), "--codec", codec, "--train-per-class", "1",
                     "--val-per-class", "1", "--frames", "12", "--size", "48x32"]) == 0
    assert read_labels(out / "labels.csv") == [c[0] for c in CLASSES]
    ds = VideoDataset.load(out / "train.txt", out, out / "labels.csv")
    assert len(ds) == 8 and sorted(ds.labels) == list(range(8))
    assert all(p.endswith(ext) for p in ds.paths)
    assert all(i.bad is None and i.num_frames == 12 and (i.width, i.height) == (48, 32) for i in ds.infos)
    assert {i.codec for i in ds.infos} == {codec}


def test_make_synthetic_is_byte_reproducible(tmp_path):
    """The same seed writes the same files: the demo and its test must not change between runs
    (x264's macroblock-tree rate control once made 1 file in 4 encode differently)."""
    from ila_fast.data.synthetic import make_synthetic

    digests = []
    for run in ("a", "b"):
        make_synthetic(tmp_path / run, train_per_class=3, val_per_class=0, frames=12, size=(48, 40), seed=5)
        files = sorted((tmp_path / run / "videos" / "train").iterdir())
        assert len(files) == 3 * len(CLASSES)
        digests.append([f.read_bytes() for f in files])
    assert digests[0] == digests[1]
