"""Something-Something v2 as the official site ships it.

Annotations (``data.annotations``): ``something-something-v2-labels.json`` (``{"class name": "id"}``),
``something-something-v2-train.json`` and ``-validation.json`` (a list of ``{"id", "label", "template",
"placeholders"}``). A video's class is its template with the brackets removed
(``Putting [something] on a surface`` -> ``Putting something on a surface``), its id the labels file's;
the labels file is checked against the class names (data.labels, default: the bundled 174).
The test JSON has no labels. Videos (``data.root``): ``<id>.webm`` (the official
``20bn-something-something-v2/`` folder), or transcoded copies of the same name with another extension.
"""
from __future__ import annotations

import json
from pathlib import Path

from ..dataset import DatasetError
from .base import ClassNames, DatasetSplit, Sample, VideoFiles, find_one
from .names import class_key, suggest

PHASE_PATTERNS = {"train": ("something-something-v2-train.json", "*train*.json"),
                  "val": ("something-something-v2-validation.json", "*validation*.json", "*val*.json"),
                  "test": ("something-something-v2-test.json",)}


def _load_json(path: Path):
    try:
        return json.loads(path.read_bytes().decode("utf-8-sig"))
    except (UnicodeDecodeError, ValueError) as e:
        raise DatasetError(f"{path}: not a JSON file ({e})") from None


def label_ids(annotations: Path, names: ClassNames) -> tuple[Path, dict[str, int]]:
    """The labels JSON (name -> id), every entry checked against ``names``."""
    path = find_one(annotations, ("something-something-v2-labels.json", "*labels*.json"), "labels JSON", "ssv2")
    raw = _load_json(path)
    if not isinstance(raw, dict):
        raise DatasetError(f"{path}: expected an object {{\"class name\": \"id\"}}")
    ids = {}
    for n, (name, value) in enumerate(raw.items(), 1):
        where = f"{path.name}: entry {n} ({name!r})"
        if not str(value).isdigit():
            raise DatasetError(f"{where}: id {value!r} is not an integer")
        ids[name] = names.check(int(value), name, where)
    if len(ids) != len(names):
        raise DatasetError(f"{path}: {len(ids)} classes, {names.source} has {len(names)}")
    return path, ids


def read(dataset: str, annotations: Path, videos: VideoFiles, phase: str, split: int,
         names: ClassNames) -> DatasetSplit:
    labels_path, ids = label_ids(annotations, names)
    source = find_one(annotations, PHASE_PATTERNS[phase], f"{phase} annotations", dataset)
    entries = _load_json(source)
    if not isinstance(entries, list):
        raise DatasetError(f"{source}: expected a list of {{\"id\", \"template\", ...}} entries")
    loose = {class_key(name): i for name, i in ids.items()}
    samples = []
    for n, entry in enumerate(entries, 1):
        vid = str(entry.get("id", "")) if isinstance(entry, dict) else ""
        where = f"{source.name}: entry {n} (id {vid or '?'})"
        if not vid:
            raise DatasetError(f"{where}: no video id")
        template = entry.get("template")
        if template is None:
            raise DatasetError(f"{where}: no template (the test set has no labels: it cannot be trained or scored)")
        name = template.replace("[", "").replace("]", "")
        label = ids.get(name, loose.get(class_key(name)))  # "[Something]" and "[something]" alike
        if label is None:
            raise DatasetError(f"{where}: class {name!r} is not in {labels_path.name}"
                               f"{suggest(name, list(ids))}")
        path = videos.find(where, exact=(f"{vid}.webm",), stems=(vid,)) or f"{vid}.webm"
        samples.append(Sample(path, label, where))
    if not samples:
        raise DatasetError(f"{source}: no videos listed")
    return DatasetSplit(dataset, phase, f"{dataset}_{phase}", source, samples, names.names,
                        [f"ids from {labels_path.name}"])
