"""Datasets as people download them: one adapter per dataset, chosen by name (``data.dataset``).

    list                 the list format (``relative/path.mp4 label`` + an ``id,name`` CSV): the default
    kinetics400/600/700  CVDF / DeepMind CSVs or mmaction2 video lists (``kinetics.py``)
    ssv2                 the official JSON annotations and labels file (``ssv2.py``)
    ucf101, hmdb51       the official split files, ``data.split`` 1-3 (``ucf101.py``, ``hmdb51.py``)

An adapter reads ``data.annotations`` (the dataset's annotation folder) and finds the videos under
``data.root``; the class names are ``data.labels`` or else the bundled ones (``labels/*.csv``,
``names.py``), and every row is checked against them. ``load_dataset`` gives the loader the same
``VideoDataset`` a list file would; ``ila-fast prepare-dataset`` writes the list files once instead.
"""
from __future__ import annotations

import importlib
import logging
from pathlib import Path

from ..dataset import DatasetError, VideoDataset, VideoEntry, read_labels, report_missing
from .base import ClassNames, DatasetSplit, Sample, video_files
from .names import LABEL_SETS, bundled_labels_path, bundled_names, class_key

__all__ = ["ADAPTERS", "LABEL_SETS", "SPLITS", "ClassNames", "DatasetSplit", "Sample", "bundled_labels_path",
           "bundled_names", "class_key", "class_names_for", "load_dataset", "read_split"]

log = logging.getLogger("ila_fast.data")

# data.dataset -> the module that reads it (None: the list format, read by ila_fast.data.dataset)
ADAPTERS = {"list": None, "kinetics400": "kinetics", "kinetics600": "kinetics", "kinetics700": "kinetics",
            "ssv2": "ssv2", "ucf101": "ucf101", "hmdb51": "hmdb51"}
SPLITS = {"ucf101": (1, 2, 3), "hmdb51": (1, 2, 3)}   # official splits; the others have one
PHASES = ("train", "val", "test")


def read_split(dataset: str, annotations, videos, phase: str, split: int = 1,
               labels: str | None = None) -> DatasetSplit:
    """One phase of a dataset's official split, every row checked; ``labels``: a label CSV (or a bundled
    set's name) instead of the dataset's bundled names."""
    if ADAPTERS.get(dataset) is None:
        raise DatasetError(f"data.dataset = {dataset!r} has no adapter; adapters: "
                           f"{', '.join(k for k, v in ADAPTERS.items() if v)}")
    if phase not in PHASES:
        raise ValueError(f"phase {phase!r} is not one of {PHASES}")
    if split not in SPLITS.get(dataset, (1,)):
        raise DatasetError(f"data.split = {split}: {dataset} has the official split(s) "
                           f"{', '.join(map(str, SPLITS.get(dataset, (1,))))}")
    if not annotations:
        raise DatasetError(f"data.annotations is not set: give {dataset}'s annotation folder "
                           "(--set data.annotations=DIR, or --annotations DIR)")
    names = ClassNames(read_labels(labels) if labels else bundled_names(dataset),
                       str(labels) if labels else f"the bundled {dataset} class names")
    files = video_files(str(Path(videos).resolve()))
    module = importlib.import_module(f"{__name__}.{ADAPTERS[dataset]}")
    return module.read(dataset, Path(annotations), files, phase, split, names)


def load_dataset(data_cfg, phase: str, num_classes: int | None = None, split: int | None = None) -> VideoDataset:
    """The ``VideoDataset`` of ``data_cfg.dataset``'s ``phase`` (the loader's entry for adapters)."""
    s = read_split(data_cfg.dataset, data_cfg.annotations, data_cfg.root, phase,
                   data_cfg.split if split is None else split, data_cfg.labels)
    if num_classes is not None and len(s.class_names) != num_classes:
        raise DatasetError(f"{data_cfg.labels or data_cfg.dataset}: {len(s.class_names)} classes, but "
                           f"model.num_classes = {num_classes}; set model.num_classes = {len(s.class_names)}")
    for note in s.notes:
        log.info("%s: %s", s.name, note)
    report_missing(s.source, Path(data_cfg.root), [(x.where, x.path) for x in s.samples], data_cfg.missing)
    entries = [VideoEntry(x.path, x.label, i + 1) for i, x in enumerate(s.samples)]
    return VideoDataset.from_entries(Path(data_cfg.annotations) / s.name, data_cfg.root, entries, s.class_names,
                                     index_dir=data_cfg.index_dir, workers=max(1, data_cfg.num_workers))


def class_names_for(cfg) -> tuple[list[str] | None, str | None]:
    """A run's class names and where they come from: ``model.class_names``, else ``data.labels``, else the
    bundled names of ``data.dataset`` (None, None: no names, e.g. a list dataset without a label CSV)."""
    source = cfg.model.class_names or cfg.data.labels
    if source:
        return read_labels(source), source
    if ADAPTERS.get(cfg.data.dataset):
        return bundled_names(cfg.data.dataset), f"the bundled {cfg.data.dataset} class names"
    return None, None
