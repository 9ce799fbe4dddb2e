"""Kinetics-400 / -600 / -700 as downloaded.

Annotations (``data.annotations``), either of:

* the CVDF / DeepMind CSVs ``train.csv``, ``val.csv`` (or ``validate.csv``, ``kinetics_400_val.csv``, ...),
  ``test.csv``: a header ``label,youtube_id,time_start,time_end,split[,is_cc]``, names quoted where
  they hold a comma;
* mmaction2's ``kinetics400_{train,val}_list_videos.txt`` (``path id`` per line), with its names-only
  ``label_map_k400.txt`` beside it when present (checked line by line against the class names).

Videos (``data.root``), any of these layouts: the CVDF release's
``{train,val,test}/<youtube_id>_<start:06d>_<end:06d>.mp4``, the same without split folders, older
downloaders' ``<youtube_id>.mp4`` (or ``.mkv`` / ``.webm``), and per-class folders
(``train/abseiling/...``); a file is found by its name wherever it lies below the folder.
"""
from __future__ import annotations

import csv
from pathlib import Path

from ..dataset import DatasetError
from .base import (PHASE_FOLDERS, ClassNames, DatasetSplit, Sample, VideoFiles, annotation_lines, find_one,
                   numbered_lines)

PHASE_PATTERNS = {
    "train": ("train.csv", "*[_-]train.csv", "*_train_list_videos.txt"),
    "val": ("val.csv", "validate.csv", "validation.csv", "*[_-]val.csv", "*[_-]validate.csv", "*[_-]validation.csv",
            "*_val_list_videos.txt"),
    "test": ("test.csv", "*[_-]test.csv", "*_test_list_videos.txt"),
}
CSV_COLUMNS = ("label", "youtube_id", "time_start", "time_end")


def read(dataset: str, annotations: Path, videos: VideoFiles, phase: str, split: int,
         names: ClassNames) -> DatasetSplit:
    source = find_one(annotations, PHASE_PATTERNS[phase], f"{phase} annotations", dataset)
    if source.suffix == ".txt":
        samples, notes = _read_mmaction(source, videos, phase, names)
    else:
        samples, notes = _read_csv(source, videos, phase, names), []
    if not samples:
        raise DatasetError(f"{source}: no videos listed")
    return DatasetSplit(dataset, phase, f"{dataset}_{phase}", source, samples, names.names, notes)


def _read_csv(source: Path, videos: VideoFiles, phase: str, names: ClassNames) -> list[Sample]:
    lines = annotation_lines(source)
    header = next(csv.reader(lines[:1]), []) if lines else []
    columns = {name.strip(): i for i, name in enumerate(header)}
    absent = [c for c in CSV_COLUMNS if c not in columns]
    if absent:
        raise DatasetError(f"{source}:1: expected a header with {', '.join(CSV_COLUMNS)}, got {','.join(header)!r}"
                           + (" (a test CSV without labels cannot be trained or scored)" if absent == ["label"]
                              else ""))
    folder = videos.folder_for(phase)
    samples = []
    for lineno, line in enumerate(lines[1:], 2):
        if not line.strip():
            continue
        where = f"{source.name}:{lineno}"
        row = next(csv.reader([line]))
        if len(row) < len(header):
            raise DatasetError(f"{where}: expected {len(header)} fields ({','.join(header)}), got {len(row)}")
        label, youtube_id = row[columns["label"]].strip(), row[columns["youtube_id"]].strip()
        try:
            start, end = (int(float(row[columns[c]])) for c in ("time_start", "time_end"))
        except ValueError:
            raise DatasetError(f"{where}: time_start / time_end {row[columns['time_start']]!r} / "
                               f"{row[columns['time_end']]!r} are not numbers") from None
        label_id = names.id_of(label, where)
        clip = f"{youtube_id}_{start:06d}_{end:06d}"
        prefer = (*PHASE_FOLDERS[phase], label, label.replace(" ", "_"))
        path = videos.find(where, stems=(clip, youtube_id), prefer=prefer)
        if path is None:  # where the CVDF layout would have it: reported as missing by the loader
            path = f"{folder}/{clip}.mp4" if folder else f"{clip}.mp4"
        samples.append(Sample(path, label_id, where))
    return samples


def _read_mmaction(source: Path, videos: VideoFiles, phase: str, names: ClassNames) -> tuple[list[Sample], list]:
    notes = []
    label_maps = sorted(source.parent.glob("label_map*.txt"))
    if len(label_maps) == 1:  # names only, one a line: line i is class i
        _check_label_map(label_maps[0], names)
        notes.append(f"class names checked against {label_maps[0].name}")
    folder = videos.folder_for(phase)
    samples = []
    for where, line in numbered_lines(source):
        parts = line.rsplit(None, 1)
        if len(parts) != 2 or not parts[1].lstrip("+-").isdigit():
            raise DatasetError(f"{where}: expected 'relative/path label', got {line!r}")
        rel, label = parts[0], int(parts[1])
        class_folder = rel.split("/")[0] if "/" in rel else None
        known = class_folder is not None and class_folder not in PHASE_FOLDERS[phase] and _is_class(names, class_folder)
        names.check(label, class_folder if known else None, where)
        exact = (rel, *(f"{f}/{rel}" for f in PHASE_FOLDERS[phase]))
        path = videos.find(where, exact=exact, stems=(Path(rel).stem,), prefer=PHASE_FOLDERS[phase])
        if path is None:
            path = f"{folder}/{rel}" if folder else rel
        samples.append(Sample(path, label, where))
    return samples, notes


def _is_class(names: ClassNames, name: str) -> bool:
    try:
        names.id_of(name, "")
    except DatasetError:
        return False
    return True


def _check_label_map(path: Path, names: ClassNames) -> None:
    entries = [line.strip() for line in annotation_lines(path)]
    while entries and not entries[-1]:
        entries.pop()
    if len(entries) != len(names):
        raise DatasetError(f"{path}: {len(entries)} class names, {names.source} has {len(names)}")
    for i, name in enumerate(entries):
        names.check(i, name, f"{path.name}:{i + 1}")
