"""``ila-fast prepare SRC_LIST DST_DIR``: re-encode a dataset for fast loading (ila_fast.data.prepare)."""
from __future__ import annotations

import os

from ila_fast.arguments import existing_file, int_range, positive_int


def add_arguments(parser) -> None:
    parser.add_argument("src_list", type=existing_file, metavar="SRC_LIST",
                        help="list file (`relative/path label` per line)")
    parser.add_argument("dst_dir", metavar="DST_DIR", help="folder for the copies, the new list and the report")
    parser.add_argument("--root", default=None, metavar="DIR",
                        help="data root the list's paths are relative to (default: the list's folder)")
    parser.add_argument("--short-side", type=positive_int, default=320, help="short side in pixels (never upscaled)")
    parser.add_argument("--gop", type=positive_int, default=16, help="a key frame every GOP frames (closed GOPs)")
    parser.add_argument("--codec", choices=("h264", "vp9"), default="h264",
                        help="h264 (.mp4), or vp9 (.webm: DALI's CPU decoder reads it)")
    parser.add_argument("--crf", type=int_range(0, 51), default=23, help="quality (lower: better, larger)")
    parser.add_argument("--jobs", type=positive_int, default=os.cpu_count() or 1, help="parallel processes")


def run(args) -> int:
    from ila_fast.data.prepare import run as prepare_run

    return prepare_run(args)
