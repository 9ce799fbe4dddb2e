"""``ila-fast bench data``: clips/s of the data backends on generated videos."""
from __future__ import annotations

import argparse
import os
import tempfile

from ila_fast.arguments import int_list, positive_int, size_wxh


def _checked(parse):
    """Validate with ``parse`` at parse time, keep the text (the benchmark parses it itself)."""
    def check(text: str) -> str:
        parse(text)
        return text
    check.__name__ = parse.__name__
    return check


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", default=os.path.join(tempfile.gettempdir(), "ila_fast_bench_data"),
                        metavar="DIR", help="folder for the generated benchmark videos (reused when present)")
    parser.add_argument("--videos", type=positive_int, default=12, help="distinct videos per codec")
    parser.add_argument("--frames", type=positive_int, default=150, help="frames per video (Kinetics: ~250-300)")
    parser.add_argument("--size", type=_checked(size_wxh), default="340x256",
                        help="video WIDTHxHEIGHT (Kinetics: ~340x256)")
    parser.add_argument("--gops", type=_checked(int_list), default="16,250",
                        help="key-frame intervals of the H.264 videos (the first one also for the lever rows)")
    parser.add_argument("--clips", type=positive_int, default=96, help="clips timed per row (start-up included)")
    parser.add_argument("--rounds", type=positive_int, default=3,
                        help="rounds of every (GOP, workers) cell, alternating the pipelines; rows give medians")
    parser.add_argument("--batch-size", type=positive_int, default=8, help="clips per batch")
    parser.add_argument("--frames-per-clip", type=positive_int, default=8, help="frames per clip (T)")
    parser.add_argument("--input-size", type=positive_int, default=224, help="clip side in pixels")
    parser.add_argument("--workers", type=_checked(int_list), default="0,1,2",
                        help="worker counts for the CPU rows")
    parser.add_argument("--no-trainer", action="store_true", help="skip the ViT-B/16 consumption rate (GPU)")
    parser.add_argument("--save", default=None, metavar="JSON", help="write the table as JSON to this path")


def run(args) -> int:
    from ila_fast.bench import data_table

    return data_table.run(args)
