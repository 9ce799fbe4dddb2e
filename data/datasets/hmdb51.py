"""HMDB51 with its official splits (``testTrainMulti_7030_splits``: ``<class>_test_split<N>.txt``).

Each class has one file per split; a line names a video and its role in that split: ``1`` training,
``2`` testing, ``0`` in neither (the official 70 / 30 videos per class; the rest are left out by
the split itself, and counted in the notes). The class is the file's name (``brush_hair`` ->
``brush hair``), its id the class names' (data.labels, default: the bundled 51); every class must
have its file. ``data.split`` (1-3) picks the split. Videos (``data.root``): the release's folders
``<class>/<video>.avi`` (``hmdb51_org`` after extracting each class's archive), or the files flat.
"""
from __future__ import annotations

import re
from pathlib import Path

from ..dataset import DatasetError
from .base import AnnotationsNotFound, ClassNames, DatasetSplit, Sample, VideoFiles, numbered_lines

ROLES = {"train": "1", "val": "2", "test": "2"}


def split_files(annotations: Path, split: int) -> list[Path]:
    if not annotations.is_dir():
        raise DatasetError(f"{annotations}: the annotations folder (data.annotations / --annotations) does not exist")
    pattern = f"*_test_split{split}.txt"
    files = sorted(annotations.glob(pattern)) or sorted(annotations.glob(f"*/{pattern}"))
    if not files:
        raise AnnotationsNotFound(f"{annotations}: no HMDB51 split files ({pattern}, e.g. brush_hair_test_split{split}.txt)")
    return files


def read(dataset: str, annotations: Path, videos: VideoFiles, phase: str, split: int,
         names: ClassNames) -> DatasetSplit:
    files = split_files(annotations, split)
    role = ROLES[phase]
    samples, seen, unused = [], {}, 0
    for path in files:
        folder = re.sub(rf"_test_split{split}\.txt$", "", path.name)
        label = names.id_of(folder.replace("_", " "), f"{path.name}: the file's class {folder!r}")
        if label in seen:
            raise DatasetError(f"{path}: class {names.names[label]!r} also has {seen[label].name}")
        seen[label] = path
        for where, line in numbered_lines(path):
            parts = line.split()
            if len(parts) != 2 or parts[1] not in ("0", "1", "2"):
                raise DatasetError(f"{where}: expected 'video.avi 0|1|2' (0: unused, 1: train, 2: test), got {line!r}")
            if parts[1] != role:
                unused += parts[1] == "0"
                continue
            rel = f"{folder}/{parts[0]}"
            path_found = videos.find(where, exact=(rel, parts[0]), stems=(Path(parts[0]).stem,), prefer=(folder,))
            samples.append(Sample(path_found or rel, label, where))
    absent = [names.names[i] for i in range(len(names)) if i not in seen]
    if absent:
        raise DatasetError(f"{files[0].parent}: no split {split} file for {len(absent)} class(es) of "
                           f"{names.source}: {', '.join(absent[:5])}")
    if not samples:
        raise DatasetError(f"{files[0].parent}: no videos marked {role} in split {split}")
    kind = "train" if phase == "train" else "test"
    notes = [f"{unused} videos marked 0 (in neither set of split {split}) are not used, as the protocol says"]
    return DatasetSplit(dataset, phase, f"{dataset}_{kind}_split{split}", files[0].parent, samples, names.names,
                        notes)
