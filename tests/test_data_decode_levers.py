"""The CPU decoder's speed levers change no pixel: draining the decoder after the last frame needed before
a seek, opening a container without the stream probe's decoding, and the planar float output give exactly
the frames the decoder gives without them, on every container of the corpus, and draining does not
make the decoder fall back to decoding from the start."""
import numpy as np
import pytest
import torch
from ila_fast.data.decode import FAST_OPEN_CONTAINERS, PyAVDecoder
from ila_fast.data.probe import probe_video

from video_fixtures import GOP, corpus_videos, read_indices_raw

pytest.importorskip("av")


class CountingDecoder(PyAVDecoder):
    """Counts the decoding passes (a second pass per call is the fallback from the start)."""

    def __init__(self, **options):
        super().__init__(**options)
        self.passes = 0

    def _decode(self, *args, **kwargs):
        self.passes += 1
        return super()._decode(*args, **kwargs)


def index_sets(count: int) -> list[list[int]]:
    rng = np.random.default_rng(7)
    structured = [
        list(range(count)),            # everything: one run, drained at the end
        [0], [count - 1],              # a lone key frame; the last frame (drained at the end of the stream)
        [1, 2, 3], [2, 3], [1, 3],     # B-frames and the P-frame after them, in one GOP (decoded P first)
        [GOP - 1, GOP, GOP + 1],       # across a key frame: two runs
        [3, GOP + 2, 2 * GOP + 1],     # one frame per GOP: a seek and a drain for each
        [5, 5, 2, 9, 2],               # repeats, out of order
    ]
    drawn = [sorted(rng.choice(count, size=8, replace=True).tolist()) for _ in range(6)]
    return [[i for i in s if i < count] for s in structured + drawn]


# every container the CPU decoder reads (the broken and count-indexed ones are covered elsewhere)
NAMES = ["mp4", "mov", "mkv", "webm", "ts", "mpg", "flv", "mkv_vp9", "edit_list", "thumbnail_first_mp4",
         "thumbnail_first_mkv", "avi", "resolution_change"]


@pytest.mark.parametrize("name", NAMES)
def test_levers_return_exactly_the_frames_decoded_without_them(name):
    path, first, count = corpus_videos()[name]
    info = probe_video(path)
    assert info.bad is None, info.detail
    plain = CountingDecoder(drain=False, fast_open=False)
    fast, planar_decoder = CountingDecoder(), PyAVDecoder()
    for indices in index_sets(count):
        reference = plain.decode(str(path), indices, info)
        frames = fast.decode(str(path), indices, info)
        assert frames.dtype == np.uint8 and frames.shape == reference.shape
        np.testing.assert_array_equal(frames, reference, err_msg=f"{name} {indices}")
        if name != "resolution_change":  # its second half is painted at another size
            assert read_indices_raw(frames) == [first + i for i in indices], (name, indices)
        planar = planar_decoder.decode(str(path), indices, info, planar=True)
        assert planar.dtype == torch.float32 and planar.shape == (len(indices), 3, *frames.shape[1:3])
        assert torch.equal(planar, torch.from_numpy(frames).permute(0, 3, 1, 2).float()), (name, indices)
    # the levers never send the decoder back to the start where it did not go without them
    assert fast.passes <= plain.passes, (name, fast.passes, plain.passes)


@pytest.mark.parametrize("name", ["mp4", "mov", "mkv", "edit_list", "thumbnail_first_mp4"])
def test_h264_with_b_frames_is_drained_and_opened_fast_in_one_pass(name):
    """Where the timestamps give the order (mp4 / mov / mkv), every index set is decoded in one pass,
    with the stream probe's decoding skipped and the probe's reorder depth set instead."""
    path, first, count = corpus_videos()[name]
    info = probe_video(path)
    assert info.index_by == "pts" and info.codec == "h264" and info.container in FAST_OPEN_CONTAINERS
    assert info.reorder_depth >= 1  # B-frames: frames are held back for reordering
    decoder = CountingDecoder()
    container, fast = decoder._open(str(path), info)
    container.close()
    assert fast
    sets = index_sets(count)
    for indices in sets:
        assert read_indices_raw(decoder.decode(str(path), indices, info)) == [first + i for i in indices]
    assert decoder.passes == len(sets), (name, decoder.passes, len(sets))


def test_an_index_without_reorder_depth_opens_with_the_stream_probe():
    """An index written before the depth was recorded (-1) still decodes, through the full stream probe."""
    path, first, count = corpus_videos()["mp4"]
    info = probe_video(path)
    info.reorder_depth = -1
    decoder = PyAVDecoder()
    container, fast = decoder._open(str(path), info)
    container.close()
    assert not fast
    assert read_indices_raw(decoder.decode(str(path), [1, 2, 3, 9], info)) == [1, 2, 3, 9]
