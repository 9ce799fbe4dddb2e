"""Where the CPU backend's clips are finished: workers that send each crop as decoded (RawClip, uint8
YUV 4:2:0; the device converts and resizes) give the same clips as workers that convert and resize
themselves, for YUV and non-YUV sources; a loader for a GPU sends crops as decoded."""
import numpy as np
import pytest
import torch
from ila_fast.data.cpu_backend import raw_clip
from ila_fast.data.decode import PyAVDecoder, RawClip
from ila_fast.data.loader import build_loader
from ila_fast.data.probe import probe_video
from ila_fast.data.synthetic import write_video
from video_fixtures import S, T, fixture_videos, painted_frames, read_indices_clip, read_indices_raw, write_list

from ila_fast.config import DataConfig

pytest.importorskip("av")


def config(names, **overrides) -> DataConfig:
    v = fixture_videos()
    lst = write_list(v["root"], names, v)
    return DataConfig(root=str(v["root"]), train_list=str(lst), batch_size=4, cpu_decoder="pyav",
                      max_bad_fraction=1.0, **overrides)


@pytest.fixture
def one_thread():
    # PyTorch's CPU bilinear resize rounds its last bit by how the work is split among threads, which
    # moves a few pixels sitting exactly between two levels; workers run one thread, so compare so
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_crops_as_decoded_finish_to_the_clips_workers_resize(one_thread):
    names = ["painted_h264", "rotated", "vfr", "odd_size", "motion_mjpeg", "motion_vp9_0", "motion_h264_0",
             "painted_vp9"]
    cfg = config(names, num_workers=2, color_jitter_p=1.0, erasing_p=0.5, mixup_alpha=0.0, cutmix_alpha=0.0)
    resized = build_loader(cfg, "train", frames=T, input_size=S, num_classes=2, backend="cpu")
    raw = build_loader(cfg, "train", frames=T, input_size=S, num_classes=2, backend="cpu")
    assert resized.backend.transport == "resized"
    raw.backend.transport = "raw"
    sent = next(iter(raw.backend.epoch(0)))["video"]
    assert isinstance(sent, list) and all(isinstance(c, RawClip) for c in sent)
    assert all(c.y.dtype == torch.uint8 and c.y.shape[0] == T and c.rgb is None for c in sent)
    checked = 0
    for a, b in zip(resized, raw):
        assert b.video.dtype == torch.float32 and b.video.shape == a.video.shape == (len(a.specs), T, 3, S, S)
        assert torch.equal(a.video, b.video)
        checked += len(a.specs)
    assert checked == len(names)


def test_a_non_yuv420_video_travels_as_rgb(tmp_path, one_thread):
    """4:4:4 H.264 is converted by FFmpeg in the worker (as uint8 RGB of the crop) and finishes as the
    decoder's own frames; the painted indices survive."""
    path = write_video(tmp_path / "yuv444.mp4", painted_frames(24), codec="h264", pix_fmt="yuv444p")
    info = probe_video(path)
    assert info.bad is None, info.detail
    decoder = PyAVDecoder()
    indices = [0, 5, 5, 3, 17, 23]
    raw = decoder.decode_raw(str(path), indices, info)
    assert raw.rgb is not None and raw.rgb.dtype == torch.uint8 and raw.y is None
    assert torch.equal(raw.to_rgb(), decoder.decode(str(path), indices, info, planar=True))
    assert read_indices_raw(raw.to_rgb().permute(0, 2, 3, 1).to(torch.uint8).numpy()) == indices


def test_raw_clip_selects_and_converts_like_the_decoder():
    """A YUV RawClip's frames, reordered with repeats, are the decoder's frames in that order; its crop
    box is inside its planes (with the margin for the chroma interpolation)."""
    v = fixture_videos()
    path = v["painted_h264"]
    info = probe_video(path)
    decoder = PyAVDecoder()
    order = [6, 1, 1, 9, 2]
    crop = (3, 5, 21, 17)  # odd offsets and sizes: the chroma grid does not line up with the crop
    raw = decoder.decode_raw(str(path), order, info, crop=crop)
    assert raw.y is not None and raw.num_frames == len(order) and raw.size == (21, 17)
    x, y, w, h = raw.box
    assert x + w <= raw.y.shape[-1] and y + h <= raw.y.shape[-2] and raw.u.shape[-1] * 2 >= raw.y.shape[-1]
    full = decoder.decode(str(path), order, info)
    np.testing.assert_array_equal(raw.to_rgb().permute(0, 2, 3, 1).to(torch.uint8).numpy(),
                                  full[:, 5:22, 3:24])
    sorted_raw = decoder.decode_raw(str(path), sorted(set(order)), info, crop=crop)
    lookup = {i: k for k, i in enumerate(sorted(set(order)))}
    assert torch.equal(sorted_raw.select([lookup[i] for i in order]).to_rgb(), raw.to_rgb())


def test_the_plan_clip_check_refuses_a_crop_outside_its_planes():
    v = fixture_videos()
    info = probe_video(v["painted_h264"])

    class Broken(PyAVDecoder):
        def decode_raw(self, *args, **kwargs):
            clip = super().decode_raw(*args, **kwargs)
            clip.box = (clip.box[0], clip.box[1], clip.y.shape[-1] + 1, clip.box[3])
            return clip

    from ila_fast.data.bad_videos import BadVideo
    from ila_fast.data.plan import PlanSettings, plan_for_dataset
    from ila_fast.data.dataset import VideoDataset

    lst = write_list(v["root"], ["painted_h264"], v)
    ds = VideoDataset.load(lst, v["root"])
    spec = plan_for_dataset(ds, PlanSettings(frames=T, input_size=S, batch_size=1), "val").clip(0, 0)
    with pytest.raises(BadVideo, match="crop"):
        raw_clip(Broken(), str(v["painted_h264"]), spec, info, S)


def test_a_loader_for_a_gpu_sends_crops_as_decoded():
    cfg = config(["painted_h264", "motion_h264_0"])
    on_gpu = build_loader(cfg, "train", frames=T, input_size=S, num_classes=2, backend="cpu", device="cuda")
    on_cpu = build_loader(cfg, "train", frames=T, input_size=S, num_classes=2, backend="cpu", device="cpu")
    assert (on_gpu.backend.transport, on_gpu.backend.pin_memory) == ("raw", True)
    assert (on_cpu.backend.transport, on_cpu.backend.pin_memory) == ("resized", False)


def test_painted_indices_survive_the_device_finishing(one_thread):
    cfg = config(["painted_h264", "painted_vp9"] * 2, num_workers=1, crop_scales=[1.0], color_jitter_p=0.0,
                 grayscale_p=0.0, erasing_p=0.0, mixup_alpha=0.0, cutmix_alpha=0.0)
    loader = build_loader(cfg, "train", frames=T, input_size=S, num_classes=2, backend="cpu")
    loader.backend.transport = "raw"
    checked = 0
    for batch in loader:
        for clip, spec in zip(batch.video, batch.specs):
            assert read_indices_clip(clip) == list(spec.frames)
            checked += 1
    assert checked == 4


@pytest.mark.skipif(not torch.cuda.is_available(), reason="finishing crops on a GPU needs a GPU")
def test_crops_finished_on_a_gpu_match_the_cpu(one_thread):
    """The GPU's conversion and resize are the same float32 operations; only their last bit may differ
    (other kernels, fused multiply-adds), which moves a value sitting exactly between two levels by one,
    in the conversion and again in the resize: rare, and at most two levels."""
    from ila_fast.config import PIXEL_STD

    names = ["painted_h264", "rotated", "vfr", "odd_size", "motion_mjpeg", "motion_h264_0"] * 2
    # the per-clip colour map: the recipe's per-frame jitter on 8-bit levels can carry a level of the
    # resize to a few (its gains and truncations); its GPU numbers: tests/test_recipe_color.py
    cfg = config(names, num_workers=1, color_jitter_p=1.0, erasing_p=0.5, mixup_alpha=0.0, cutmix_alpha=0.0,
                 color_jitter="per_clip")
    gpu = build_loader(cfg, "train", frames=T, input_size=S, num_classes=2, backend="cpu", device="cuda")
    cpu = build_loader(cfg, "train", frames=T, input_size=S, num_classes=2, backend="cpu", device="cpu")
    assert gpu.backend.transport == "raw"
    std = torch.tensor(PIXEL_STD).view(1, 1, 3, 1, 1)
    diff = torch.cat([((a.video.cpu() - b.video).abs() * std).flatten() for a, b in zip(gpu, cpu)])
    print(f"\nGPU-finished vs CPU-resized clips, 0-255 levels: max {diff.max():.3f}, "
          f"share moved {(diff > 1e-3).float().mean():.5f}")
    assert diff.numel() == len(names) * T * 3 * S * S
    assert diff.max() <= 2.01 and (diff > 1e-3).float().mean() <= 0.005


def test_large_crops_convert_a_few_frames_at_a_time_to_the_same_clip(monkeypatch, one_thread):
    from ila_fast.data import cpu_backend

    v = fixture_videos()
    path = v["painted_h264"]
    info = probe_video(path)
    raw = PyAVDecoder().decode_raw(str(path), [0, 3, 3, 7, 12, 1, 9, 2], info, crop=(1, 2, 30, 27))
    whole = cpu_backend.resize_raw(raw, S, False)
    monkeypatch.setattr(cpu_backend, "CHUNK_PIXELS", 30 * 27 * 3)  # 3 frames a chunk: 3 + 3 + 2
    chunked = cpu_backend.resize_raw(raw, S, False)
    assert chunked.shape == whole.shape == (8, 3, S, S)
    assert torch.equal(chunked, whole)
