"""`ila-fast prepare`: re-encoded copies keep every frame index (B-frames, AVI, an edit-list cut), have the
requested short side and key-frame interval; unreadable files are reported; a second run skips finished files."""
import json

from ila_fast.cli import main
from ila_fast.data.decode import PyAVDecoder
from ila_fast.data.probe import probe_video
from video_fixtures import corpus_videos, fixture_videos, read_indices_raw


def test_prepare_keeps_frame_indices_and_is_resumable(tmp_path, capsys):
    corpus, v = corpus_videos(), fixture_videos()
    root = v["root"]
    names = {"mp4": corpus["mp4"], "avi": corpus["avi"], "edit_list": corpus["edit_list"]}
    lines = [f"{path.relative_to(root)} {k}" for k, (path, _, _) in enumerate(names.values())]
    lines += [f"{v['truncated_mp4'].relative_to(root)} 0", "gone/missing.mp4 1"]
    src = tmp_path / "train.txt"
    src.write_text("\n".join(lines) + "\n")
    dst = tmp_path / "fast"
    assert main(["prepare", str(src), str(dst), "--root", str(root), "--short-side", "32", "--gop", "4",
                 "--jobs", "2"]) == 0
    assert "3 encoded, 0 already done, 2 could not be read" in capsys.readouterr().out
    report = json.loads((dst / "train.txt.prepare.json").read_text())
    assert [(b["line"], b["reason"].split(":")[0]) for b in report["could_not_read"]] == [(4, "truncated"),
                                                                                           (5, "missing")]
    new = (dst / "train.txt").read_text().split("\n")[:-1]
    assert len(new) == 3 and [ln.rsplit(" ", 1)[1] for ln in new] == ["0", "1", "2"]
    decoder = PyAVDecoder()
    for line, (name, (_, first, count)) in zip(new, names.items()):
        path = dst / line.rsplit(" ", 1)[0]
        info = probe_video(path)
        assert info.bad is None and info.num_frames == count, name
        assert (info.width, info.height) == (42, 32) and info.keyframes == list(range(0, count, 4)), name
        assert info.index_by == "pts" and not info.dali_issue, (name, info.dali_issue)  # the copy is plain
        assert read_indices_raw(decoder.decode(str(path), range(count), info)) == [first + i for i in range(count)]
    assert main(["prepare", str(src), str(dst), "--root", str(root), "--short-side", "32", "--gop", "4"]) == 0
    assert "0 encoded, 3 already done, 2 could not be read" in capsys.readouterr().out


def test_prepare_vp9_makes_an_mpeg_ps_video_that_dali_decodes_exactly(tmp_path):
    import pytest

    pytest.importorskip("nvidia.dali", reason="DALI is in the dev extra")
    from ila_fast.data.loader import build_loader
    from video_fixtures import S, T, read_indices_clip

    from ila_fast.config import DataConfig

    corpus, root = corpus_videos(), fixture_videos()["root"]
    src = tmp_path / "val.txt"
    src.write_text(f"{corpus['mpg'][0].relative_to(root)} 0\n{corpus['mkv_av1'][0].relative_to(root)} 1\n")
    assert main(["prepare", str(src), str(tmp_path / "vp9"), "--root", str(root), "--short-side", "32",
                 "--gop", "4", "--codec", "vp9", "--jobs", "1"]) == 0
    cfg = DataConfig(root=str(tmp_path / "vp9"), val_list=str(tmp_path / "vp9" / "val.txt"), batch_size=2,
                     num_workers=1, dali_device="cpu", dali_fallback="skip", max_bad_fraction=0.0, test_clips=2,
                     test_crops=1)
    loader = build_loader(cfg, "val", frames=T, input_size=S, num_classes=2, backend="dali")
    clips = [(clip, spec) for batch in loader for clip, spec in zip(batch.video, batch.specs)]
    assert len(clips) == 4 and not loader.bad_log.bad  # neither routed nor skipped: DALI decodes the copies
    for clip, spec in clips:
        assert read_indices_clip(clip) == list(spec.frames)
