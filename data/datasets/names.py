"""The bundled class names (``labels/<set>.csv``, ``id,name``) in each dataset's official label-id order.

* Kinetics-400 / -600: the order of the official ILA and X-CLIP label CSVs (alphabetical), which the
  released checkpoints' text heads were trained with; Kinetics-700: alphabetical, as mmaction2's map.
* Something-Something v2: the ids of the dataset's own ``something-something-v2-labels.json``.
* UCF101: ``classInd.txt`` (its 1-based ids minus one); HMDB51: the split files' sorted class names
  with ``_`` written as a space (the X-CLIP zero-shot label CSVs).
"""
from __future__ import annotations

import difflib
import re
from pathlib import Path

LABELS_DIR = Path(__file__).resolve().parent / "labels"
# label set -> classes; a set's name is also a dataset adapter's name (``data.dataset``)
LABEL_SETS = {"kinetics400": 400, "kinetics600": 600, "kinetics700": 700, "ssv2": 174, "ucf101": 101, "hmdb51": 51}


def bundled_labels_path(name: str) -> Path | None:
    """The bundled label CSV of a label set's name (``"kinetics400"``), or None."""
    return LABELS_DIR / f"{name}.csv" if name in LABEL_SETS else None


def bundled_names(name: str) -> list[str]:
    """The class names of a bundled label set, in label-id order."""
    from ..dataset import DatasetError, read_labels  # noqa: PLC0415

    path = bundled_labels_path(name)
    if path is None:
        close = difflib.get_close_matches(name, list(LABEL_SETS), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise DatasetError(f"{name!r} is not a bundled label set{hint}; bundled: {', '.join(LABEL_SETS)}")
    return read_labels(path)


def class_key(name: str) -> str:
    """A class name compared loosely: case, spaces, underscores and hyphens ignored, so that a folder
    ``brush_hair``, a name ``brush hair`` and ``BrushHair`` all meet."""
    return re.sub(r"[\s_\-]+", "", name).lower()


def suggest(name: str, names: list[str]) -> str:
    close = difflib.get_close_matches(name, names, n=1, cutoff=0.6)
    return f" (nearest: {close[0]!r})" if close else ""
