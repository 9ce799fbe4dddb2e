"""UCF101 with its official splits (``ucfTrainTestlist``: ``classInd.txt``, ``trainlist0N.txt``, ``testlist0N.txt``).

``classInd.txt`` numbers the classes from 1 (``1 ApplyEyeMakeup``); each is checked against the class
names (data.labels, default: the bundled 101, id = number - 1). A training row
(``ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 1``) must carry its folder's number; a test row names
only the video, its class is its folder's. ``data.split`` (1-3) picks the split; training reads the
train list, evaluation the test list. Videos (``data.root``): the ``UCF-101/`` folder of the release
(``<Class>/v_<Class>_gXX_cYY.avi``), or the files flat in one folder.
"""
from __future__ import annotations

from pathlib import Path

from ..dataset import DatasetError
from .base import ClassNames, DatasetSplit, Sample, VideoFiles, find_one, numbered_lines
from .names import class_key, suggest


def class_index(annotations: Path, names: ClassNames) -> tuple[Path, dict[str, int]]:
    """``classInd.txt``: folder name -> id (number - 1), each checked against ``names``."""
    path = find_one(annotations, ("classInd.txt",), "class index (classInd.txt)", "ucf101")
    folders = {}
    for where, line in numbered_lines(path):
        parts = line.split()
        if len(parts) != 2 or not parts[0].isdigit():
            raise DatasetError(f"{where}: expected 'number ClassName', got {line!r}")
        folders[parts[1]] = names.check(int(parts[0]) - 1, parts[1], where)
    if sorted(folders.values()) != list(range(len(names))):
        raise DatasetError(f"{path}: {len(folders)} classes numbered {min(folders.values()) + 1}.."
                           f"{max(folders.values()) + 1}; {names.source} has {len(names)}")
    return path, folders


def read(dataset: str, annotations: Path, videos: VideoFiles, phase: str, split: int,
         names: ClassNames) -> DatasetSplit:
    _, folders = class_index(annotations, names)
    loose = {class_key(f): i for f, i in folders.items()}
    kind = "train" if phase == "train" else "test"
    source = find_one(annotations, (f"{kind}list0{split}.txt",), f"split {split} {kind} list", dataset)
    samples = []
    for where, line in numbered_lines(source):
        parts = line.split()
        if len(parts) not in (1, 2) or (len(parts) == 2 and not parts[1].isdigit()):
            raise DatasetError(f"{where}: expected 'Class/video.avi[ number]', got {line!r}")
        rel = parts[0]
        folder = rel.split("/")[0] if "/" in rel else ""
        label = folders.get(folder, loose.get(class_key(folder)))
        if label is None:
            raise DatasetError(f"{where}: folder {folder!r} is not a class of classInd.txt"
                               f"{suggest(folder, list(folders))}")
        if len(parts) == 2 and int(parts[1]) - 1 != label:
            raise DatasetError(f"{where}: class number {parts[1]} disagrees with classInd.txt, where {folder} "
                               f"is {label + 1}")
        path = videos.find(where, exact=(rel,), stems=(Path(rel).stem,), prefer=(folder,)) or rel
        samples.append(Sample(path, label, where))
    if not samples:
        raise DatasetError(f"{source}: no videos listed")
    return DatasetSplit(dataset, phase, f"{dataset}_{kind}_split{split}", source, samples, names.names)
