"""``ila-fast prepare-dataset NAME --annotations DIR --videos DIR --out DIR``: a dataset as downloaded -> list
files, label CSV and a probe of every video (ila_fast.data.datasets.prepare)."""
from __future__ import annotations

import os

from ila_fast.arguments import positive_int
from ila_fast.config import DATASET_ADAPTERS


def add_arguments(parser) -> None:
    parser.add_argument("name", choices=[d for d in DATASET_ADAPTERS if d != "list"], metavar="NAME",
                        help="kinetics400 | kinetics600 | kinetics700 | ssv2 | ucf101 | hmdb51")
    parser.add_argument("--annotations", required=True, metavar="DIR",
                        help="the dataset's annotation folder (CSV / JSON / official split files)")
    parser.add_argument("--videos", required=True, metavar="DIR", help="the dataset's video folder")
    parser.add_argument("--out", required=True, metavar="DIR",
                        help="where the lists, labels.csv, the probe indexes and prepare_dataset.json go")
    parser.add_argument("--split", default="all", choices=("1", "2", "3", "all"),
                        help="official split(s) of UCF101 / HMDB51 (the others have one)")
    parser.add_argument("--labels", metavar="CSV", help="class names (id,name) instead of the bundled ones")
    parser.add_argument("--no-probe", action="store_true",
                        help="only write the lists (missing files are still reported; unreadable ones are not)")
    parser.add_argument("--jobs", type=positive_int, default=os.cpu_count() or 1, help="probing threads")


def run(args) -> int:
    from ila_fast.data.datasets.prepare import run as prepare_run

    return prepare_run(args)
