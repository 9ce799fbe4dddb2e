"""Evaluation: summed-softmax aggregation, metrics on hand-made cases, bad videos counted, and
every video scored exactly once on 1 and 2 ranks (gloo), with the totals of a single process."""
import json
import os
import shutil
import socket

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from torch import nn

from ila_fast.data.bad_videos import BadVideoLog
from ila_fast.data.loader import VideoLoader
from ila_fast.data.plan import PlanSettings, SamplePlan
from ila_fast.train.evaluate import evaluate, format_table, most_confused, summarize, write_confusion

K = 6  # classes of the hand-made cases


# ------------------------------------------------------------ a loader over a real plan, hand-made clips
class CodedBackend:
    """Executes a SamplePlan without decoding: each clip carries (video, view) in its first pixels."""

    def __init__(self, plan):
        self.plan = plan
        self.known_bad = {}

    def epoch(self, epoch, start_step=0):
        s = self.plan.s
        for step in range(start_step, self.plan.steps_per_epoch):
            specs = self.plan.batch(epoch, step, self.known_bad)
            video = torch.zeros(len(specs), s.frames, 3, s.input_size, s.input_size)
            for i, spec in enumerate(specs):
                video[i, 0, 0, 0, 0] = spec.video
                video[i, 0, 0, 0, 1] = spec.view
            yield {"video": video, "label": torch.tensor([sp.label for sp in specs]),
                   "position": torch.tensor([sp.position for sp in specs]),
                   "view": torch.tensor([sp.view for sp in specs]),
                   "video_index": torch.tensor([sp.video for sp in specs]), "specs": specs}


class TableModel(nn.Module):
    """Logits looked up by the (video, view) coded in the clip; counts its forward calls."""

    def __init__(self, table):
        super().__init__()
        self.register_buffer("table", torch.as_tensor(table, dtype=torch.float32))  # (videos, views, K)
        self.calls = 0

    def forward(self, video):
        self.calls += 1
        v = video[:, 0, 0, 0, 0].long()
        view = video[:, 0, 0, 0, 1].long()
        return self.table[v, view]


def coded_loader(labels, bad, rank=0, world=1, batch_size=4, clips=2, crops=3):
    settings = PlanSettings(frames=2, input_size=2, batch_size=batch_size, test_clips=clips, test_crops=crops)
    n = len(labels)
    plan = SamplePlan(settings, [10] * n, [(8, 6)] * n, labels, mode="test", rank=rank, world=world, bad=bad)
    log = BadVideoLog([f"v{i}.mp4" for i in range(n)], max_fraction=1.0)
    log.record_known(plan.bad)
    return VideoLoader(CodedBackend(plan), plan, log, num_classes=K)


def softmax(x):
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


LABELS = [0, 1, 2, 3, 4, 5, 0, 1, 2, 3, 4]  # 11 videos: divides neither the batch (4) nor 2 ranks
BAD = {5: ("truncated", "cut short")}


def table(seed=0):
    return np.random.default_rng(seed).normal(0, 2, (len(LABELS), 6, K))


def test_summed_softmax_over_views_across_batches():
    """6 views a video, 4 clips a batch: views span batches; the replacement for the bad video is discarded."""
    logits = table()
    loader = coded_loader(LABELS, BAD)
    model = TableModel(logits).train()
    result = evaluate(model, loader, K)
    assert model.training  # mode restored
    assert model.calls == len(loader) == 17  # ceil(66 / 4)
    expected = softmax(logits.astype(np.float64)).sum(axis=1)  # (videos, K): independent of the loader
    good = [v for v in range(len(LABELS)) if v not in BAD]
    assert result.scored == 10 and result.listed == 11 and result.views == 6
    assert [b["index"] for b in result.bad] == [5] and result.bad[0]["reason"] == "truncated"
    pred = expected.argmax(axis=1)
    hits = [pred[v] == LABELS[v] for v in good]
    assert result.top1 == pytest.approx(np.mean(hits))
    assert result.top1_listed == pytest.approx(np.sum(hits) / 11)
    by_index = {p["index"]: p for p in result.per_video}
    assert sorted(by_index) == good
    for v in good:
        top5 = np.argsort(-expected[v], kind="stable")[:5]
        assert [c for c, _ in by_index[v]["top5"]] == list(top5)
        assert by_index[v]["top5"][0][1] == pytest.approx(expected[v, top5[0]] / 6, abs=1e-6)
    assert "10 scored of 11 listed (1 bad)" in format_table(result)


def test_top5_and_per_class_on_a_hand_made_case(tmp_path):
    # 7 classes, 5 videos; summed scores chosen so that ranks are known.
    k = 7
    scores = torch.tensor([
        [9, 8, 7, 6, 5, 4, 0],   # label 0: top-1 hit
        [9, 8, 7, 6, 5, 4, 0],   # label 4: top-5 hit (5th), top-1 miss -> predicted 0
        [9, 8, 7, 6, 5, 4, 0],   # label 5: 6th: top-5 miss
        [0, 1, 0, 0, 0, 0, 3],   # label 6: top-1 hit
        [5, 1, 0, 0, 0, 0, 3],   # label 6: top-1 miss (0), top-5 hit
    ], dtype=torch.float64)
    labels = [0, 4, 5, 6, 6]
    seen = torch.full((5,), 2)
    r = summarize(scores, seen, labels, {}, views=2, class_names=[f"c{i}" for i in range(k)])
    assert r.top1 == pytest.approx(2 / 5)
    assert r.top5 == pytest.approx(4 / 5)
    per = {c["class"]: c for c in r.per_class}
    assert per[0]["top1"] == 1.0 and per[4]["top1"] == 0.0 and per[4]["top5"] == 1.0
    assert per[5]["top5"] == 0.0 and per[6]["top1"] == 0.5 and per[6]["videos"] == 2
    assert per[1]["videos"] == 0 and per[1]["top1"] is None
    assert r.mean_class_acc == pytest.approx((1 + 0 + 0 + 0.5) / 4)  # classes with videos only
    assert r.confusion[6].tolist() == [1, 0, 0, 0, 0, 0, 1] and r.confusion.sum() == 5
    worst = most_confused(r)
    assert {(p["true"], p["predicted"]) for p in worst} == {(4, 0), (5, 0), (6, 0)}
    d = json.loads(r.to_json())
    assert d["scored"] == 5 and d["listed"] == 5 and len(d["confusion"]) == k
    png = write_confusion(r, tmp_path / "confusion.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # A video neither scored with all its views nor known bad is an error, not a silent drop.
    with pytest.raises(RuntimeError, match="not scored with all 2 views"):
        summarize(scores, torch.tensor([2, 2, 1, 2, 2]), labels, {}, views=2)


def test_many_classes_write_the_worst_pairs_as_text(tmp_path):
    k = 60
    scores = torch.zeros(3, k, dtype=torch.float64)
    scores[0, 1] = scores[1, 1] = scores[2, 2] = 1.0
    r = summarize(scores, torch.ones(3, dtype=torch.int64), [0, 0, 2], {}, views=1)
    out = write_confusion(r, tmp_path / "confusion.png")
    assert out.suffix == ".txt" and "2  0 -> 1" in out.read_text()
    assert "confusion" not in r.to_dict()


# ------------------------------------------------------------ 2 ranks (gloo) against one process
def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _real_loader(data_dir, rank, world):
    from ila_fast.config import DataConfig
    from ila_fast.data.loader import build_loader

    cfg = DataConfig(root=str(data_dir), val_list=str(data_dir / "val7.txt"), batch_size=3, num_workers=0,
                     cpu_decoder="pyav", backend="cpu", test_clips=2, test_crops=1, max_bad_fraction=0.5,
                     report_dir=str(data_dir / f"reports{world}"))
    return build_loader(cfg, "val", frames=4, input_size=64, num_classes=8, rank=rank, world=world, mode="test")


def _tiny_model():
    from ila_fast.config import ModelConfig
    from ila_fast.model import ILAModel

    torch.manual_seed(0)
    return ILAModel(ModelConfig(arch="tiny", dataset="ssv2", num_classes=8, frames=4, input_size=64,
                                correlation_channels=16))


def _run_both(rank, world, data_dir, out_dir):
    """Evaluate the coded case and the real-video case on this rank; write what rank 0 sees."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the same float reduction order in every process
    try:
        model = TableModel(table())
        coded = evaluate(model, coded_loader(LABELS, BAD, rank, world), K)
        real_model, real_calls = _tiny_model(), []
        real_model.register_forward_pre_hook(lambda module, args: real_calls.append(1))
        real = evaluate(real_model, _real_loader(data_dir, rank, world), 8)
    finally:
        torch.set_num_threads(threads)
    with open(os.path.join(out_dir, f"rank{rank}_of{world}.json"), "w") as f:
        json.dump({"coded": coded.to_dict(), "real": real.to_dict(), "calls": model.calls,
                   "real_calls": len(real_calls)}, f)


def _worker(rank, world, port, data_dir, out_dir):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        _run_both(rank, world, data_dir, out_dir)
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def motion_videos(tmp_path_factory):
    """5 real H.264 videos, an empty file and one that fails only when decoded: 7 listed."""
    pytest.importorskip("av")
    from ila_fast.data.dataset import VideoDataset
    from ila_fast.data.synthetic import make_synthetic

    root = tmp_path_factory.mktemp("motion")
    make_synthetic(root, train_per_class=0, val_per_class=1, frames=12, size=(80, 64))
    lines = (root / "val.txt").read_text().splitlines()[:5]
    (root / "videos" / "empty.mp4").write_bytes(b"")
    stale = root / "videos" / "stale.mp4"
    shutil.copy(root / lines[0].split()[0], stale)
    lines[3:3] = ["videos/empty.mp4 2"]
    lines.append("videos/stale.mp4 1")
    (root / "val7.txt").write_text("\n".join(lines) + "\n")
    VideoDataset.load(root / "val7.txt", root, None, 8, workers=1)  # probe while the stale file is intact
    st = os.stat(stale)
    stale.write_bytes((b"garbage!" * (st.st_size // 8 + 1))[:st.st_size])
    os.utime(stale, ns=(st.st_atime_ns, st.st_mtime_ns))
    return root


def test_two_ranks_score_every_video_once_and_match_one_process(motion_videos, tmp_path):
    _run_both(0, 1, motion_videos, str(tmp_path))
    port = _free_port()
    mp.spawn(_worker, args=(2, port, motion_videos, str(tmp_path)), nprocs=2, join=True)
    single = json.loads((tmp_path / "rank0_of1.json").read_text())
    for rank in (0, 1):
        both = json.loads((tmp_path / f"rank{rank}_of2.json").read_text())
        # Hand-made logits: 11 videos, shards of 6 and 5 (36 and 30 clips; 9 and 8 batches of 4).
        assert both["coded"] == single["coded"]
        assert both["calls"] == 9, "every rank calls the model as often as the busiest one"
        # Real videos: 7 listed, shards of 4 and 3 (8 and 6 clips: 3 and 2 batches of 3); the stale
        # video (index 6, rank 0) fails only when decoded, so rank 1 learns of it by the gather.
        assert both["real"] == single["real"]
        assert both["real_calls"] == 3
    real = single["real"]
    assert real["listed"] == 7 and real["scored"] == 5 and real["bad_videos"] == 2
    assert {(b["index"], b["reason"]) for b in real["bad"]} == {(3, "empty_file"), (6, "decode_error")}
    assert sorted(p["index"] for p in real["per_video"]) == [0, 1, 2, 4, 5]
    assert single["coded"]["scored"] == 10
