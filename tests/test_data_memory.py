"""Bounded memory: one 8-frame training clip of a 4K H.264 video, decoded and transformed as a CPU worker
does, adds at most OURS_BOUND_MB of peak RSS to what FFmpeg's decoder needs to decode the same frames
(its reference-frame buffers scale with the source: 12 MB per 4K frame). The crop is scaled down in YUV
before colour conversion and frames stay uint8 until the transform; a whole-frame float32 conversion took
~3.2 GB. Each is measured in a fresh process."""
import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

OURS_BOUND_MB = 150  # what the pipeline may add to FFmpeg's own decoder buffers for one 4K clip

_MEASURE = textwrap.dedent("""
    import json, os, resource, sys
    import torch
    torch.set_num_threads(1)
    from ila_fast.data.cpu_backend import PlanClips
    from ila_fast.data.plan import PlanSettings, SamplePlan
    from ila_fast.data.probe import VideoInfo
    path, info = sys.argv[1], VideoInfo.from_json(json.loads(sys.argv[2]))
    plan = SamplePlan(PlanSettings(frames=8, input_size=224, batch_size=1), [info.num_frames],
                      [(info.width, info.height)], [0])
    clips = PlanClips(plan, [path], [info], 0, 224, decoder="pyav")
    spec = plan.clip(0, 0)
    before = int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    if sys.argv[3] == "decoder":  # FFmpeg's own cost: decode the same frames, keep nothing
        import av
        with av.open(path) as c:
            stream = c.streams.video[0]
            stream.thread_count = 1
            wanted = max(spec.frames)
            for i, frame in enumerate(c.decode(stream)):
                if i >= wanted:
                    break
        shape = []
    else:
        shape = list(clips[0]["video"].shape)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"shape": shape, "delta_mb": peak - before}))
""")


def _write_4k(path, frames=9):
    import av

    w, h = 3840, 2160
    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, (h // 16, w // 16, 3), dtype=np.uint8).repeat(16, 0).repeat(16, 1)
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=25)
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        s.options = {"preset": "ultrafast", "bf": "2", "x264-params": "keyint=8:min-keyint=8:scenecut=0"}
        for i in range(frames):
            for p in s.encode(av.VideoFrame.from_ndarray(np.roll(base, i * 16, 1), format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/statm")
def test_peak_rss_of_one_4k_clip_is_bounded(tmp_path):
    from ila_fast.data.probe import probe_video

    path = tmp_path / "uhd.mp4"
    _write_4k(path)
    info = probe_video(path)
    assert info.bad is None and (info.width, info.height) == (3840, 2160)
    results = {}
    for what in ("decoder", "clip"):
        out = subprocess.run([sys.executable, "-c", _MEASURE, str(path), json.dumps(info.to_json()), what],
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr[-2000:]
        results[what] = json.loads(out.stdout.strip().splitlines()[-1])
    clip, decoder = results["clip"]["delta_mb"], results["decoder"]["delta_mb"]
    print(f"\n4K clip: peak RSS {clip:.0f} MB above the imports; FFmpeg's decoder alone {decoder:.0f} MB "
          f"(bound: decoder + {OURS_BOUND_MB} MB)")
    assert results["clip"]["shape"] == [8, 3, 224, 224]
    assert clip <= decoder + OURS_BOUND_MB
