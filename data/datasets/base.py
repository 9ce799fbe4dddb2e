"""What the dataset adapters share: their rows, the class-name checks, and finding videos on disk.

An adapter reads a dataset's own annotation files and gives one ``Sample`` per annotated row,
in file order, never dropping one: a row whose video is not on disk keeps the path where it would
be (the loader reports it as missing, and counts it as a bad video or refuses it per
``data.missing``); a row whose label is not a known class, or whose id disagrees with the names,
is refused naming the file and row.
"""
from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field
from pathlib import Path

from ..dataset import DatasetError, _text_lines
from .names import class_key, suggest

VIDEO_EXTENSIONS = (".mp4", ".webm", ".mkv", ".avi", ".mov", ".m4v", ".flv", ".3gp", ".ogv", ".mpg", ".mpeg")
# folders that hold one phase's videos in the layouts people download or build
PHASE_FOLDERS = {"train": ("train", "videos_train", "training", "train_256"),
                 "val": ("val", "videos_val", "validate", "validation", "valid", "val_256"),
                 "test": ("test", "videos_test", "testing", "test_256")}


class AnnotationsNotFound(DatasetError):
    """The annotation folder has no file for this phase / split (a download may lack one)."""


@dataclass(frozen=True)
class Sample:
    path: str    # relative to the videos folder (data.root): where the file is, or would be when missing
    label: int
    where: str   # the annotation row it comes from, e.g. "train.csv:17"


@dataclass
class DatasetSplit:
    """One phase of one official split, ready for the loader (or ``prepare-dataset``'s list file)."""
    dataset: str
    phase: str              # "train" | "val" | "test"
    name: str               # e.g. "ucf101_train_split1": names the probe index and the bad-video report
    source: Path            # the annotation file read (HMDB51: the folder of its split files)
    samples: list[Sample]
    class_names: list[str]
    notes: list[str] = field(default_factory=list)   # what the adapter wants the user to know

    def list_lines(self) -> list[str]:
        """The split in the list format (``relative/path label``)."""
        return [f"{s.path} {s.label}" for s in self.samples]


class ClassNames:
    """Class names and the lookups adapters need; ``source`` names where they come from in messages."""

    def __init__(self, names: list[str], source: str):
        self.names, self.source = list(names), source
        self.exact = {n: i for i, n in enumerate(self.names)}
        self.loose: dict[str, int] = {}
        for i, n in enumerate(self.names):
            self.loose.setdefault(class_key(n), i)

    def __len__(self) -> int:
        return len(self.names)

    def id_of(self, name: str, where: str) -> int:
        """The id of a class name (exact, else ignoring case, spaces, ``_`` and ``-``); refused naming the row."""
        found = self.exact.get(name, self.loose.get(class_key(name)))
        if found is None:
            raise DatasetError(f"{where}: class {name!r} is not one of the {len(self)} class names of "
                               f"{self.source}{suggest(name, self.names)}; give the label CSV it belongs to "
                               "(data.labels) or fix the row")
        return found

    def check(self, label: int, name: str | None, where: str) -> int:
        """A row's id, checked: in range and, when the row also names its class, naming the same class."""
        if not 0 <= label < len(self):
            raise DatasetError(f"{where}: label {label} is out of range for the {len(self)} classes of {self.source}")
        if name is not None and class_key(name) != class_key(self.names[label]):
            raise DatasetError(f"{where}: label id {label} is {name!r} here but {self.names[label]!r} in "
                               f"{self.source}: the ids disagree; give the label CSV these annotations use "
                               "(data.labels)")
        return label


class VideoFiles:
    """Every video file under a folder, found by one walk: relative path and file-name stem lookups."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        if not self.root.is_dir():
            raise DatasetError(f"{self.root}: the videos folder (data.root / --videos) does not exist")
        self.paths: set[str] = set()
        self.stems: dict[str, list[str]] = {}
        for folder, dirs, files in os.walk(self.root, followlinks=True):
            dirs.sort()
            rel = os.path.relpath(folder, self.root)
            for f in sorted(files):
                stem, ext = os.path.splitext(f)
                if ext.lower() in VIDEO_EXTENSIONS:
                    path = f if rel == "." else f"{rel}/{f}".replace(os.sep, "/")
                    self.paths.add(path)
                    self.stems.setdefault(stem, []).append(path)

    def find(self, where: str, exact: tuple[str, ...] = (), stems: tuple[str, ...] = (),
             prefer: tuple[str, ...] = ()) -> str | None:
        """The one video for a row: an exact relative path, else a file named by a stem (first stem
        with a hit wins; among several, those with a ``prefer`` folder in their path); None if none."""
        for path in exact:
            if path in self.paths:
                return path
        for stem in stems:
            hits = self.stems.get(stem, [])
            if len(hits) > 1 and prefer:
                preferred = [h for h in hits if set(h.split("/")[:-1]) & set(prefer)]
                hits = preferred or hits
            if len(hits) == 1:
                return hits[0]
            if hits:
                raise DatasetError(f"{where}: {len(hits)} videos under {self.root} fit this row ({hits[0]}, "
                                   f"{hits[1]}); keep one")
        return None

    def folder_for(self, phase: str) -> str | None:
        """The top-level folder holding ``phase``'s videos in this layout, if there is one."""
        for name in PHASE_FOLDERS.get(phase, ()):
            if (self.root / name).is_dir():
                return name
        return None


@functools.lru_cache(maxsize=4)
def video_files(root: str) -> VideoFiles:
    """The videos under ``root``, walked once per process (train and val share the walk)."""
    return VideoFiles(root)


def annotation_lines(path: Path) -> list[str]:
    """A UTF-8 annotation file's lines (NUL bytes and non-UTF-8 bytes refused naming file:line)."""
    if not path.is_file():
        raise DatasetError(f"{path}: annotation file not found")
    return _text_lines(path)


def numbered_lines(path: Path):
    """``(where, line)`` for each non-blank line of an annotation file, stripped; ``where`` is ``name:line``."""
    for lineno, line in enumerate(annotation_lines(path), 1):
        if line.strip():
            yield f"{path.name}:{lineno}", line.strip()


def find_one(folder: Path, patterns: tuple[str, ...], what: str, dataset: str) -> Path:
    """The one file of ``folder`` (or a sub-folder, one level down) matching the first pattern that matches."""
    if not folder.is_dir():
        raise DatasetError(f"{folder}: the annotations folder (data.annotations / --annotations) does not exist")
    def ours(path: Path) -> bool:  # what ila-fast writes beside the annotations: probe indexes, bad-video reports
        return path.name.endswith(".index.json") or ".bad_videos." in path.name

    for pattern in patterns:
        hits = ([p for p in sorted(folder.glob(pattern)) if not ours(p)]
                or [p for p in sorted(folder.glob(f"*/{pattern}")) if not ours(p)])
        if len(hits) == 1:
            return hits[0]
        if len(hits) > 1:
            raise DatasetError(f"{folder}: {len(hits)} files could be the {what} ({hits[0].name}, {hits[1].name}); "
                               "point data.annotations at a folder with one")
    raise AnnotationsNotFound(f"{folder}: no {what} for {dataset} (looked for {', '.join(patterns)})")
