"""``ila-fast prepare-dataset NAME --annotations DIR --videos DIR --out DIR``: a download -> list files, once.

Writes, for every phase (and official split) the annotations have, ``OUT/<name>.txt`` in the list format
(``relative/path label``, paths relative to the videos folder, every annotated row kept, in order),
``OUT/labels.csv`` (id,name) and ``OUT/prepare_dataset.json``; then probes every listed video
(frame count, codec, ...) into the probe index beside each list, which training then reuses. Resumable:
the index is written as it grows, and a second run probes only what is new or changed. Missing and
unreadable videos are reported with their annotation row; they stay listed (training counts them as
bad videos, within ``data.max_bad_fraction``).
"""
from __future__ import annotations

import csv
import json
import time
from pathlib import Path

from ..dataset import DatasetError, VideoEntry, VideoIndex
from . import SPLITS, read_split
from .base import AnnotationsNotFound

PHASES = ("train", "val")


def prepare_dataset(dataset: str, annotations, videos, out, splits: tuple[int, ...] | None = None,
                    labels: str | None = None, probe: bool = True, workers: int = 4) -> dict:
    """Write the list files, label CSV and report of ``dataset`` into ``out``; returns the report."""
    out, videos = Path(out), Path(videos)
    splits = splits or SPLITS.get(dataset, (1,))
    start = time.perf_counter()
    read, absent, class_names = [], [], None
    for split in splits:
        for phase in PHASES:
            try:
                read.append(read_split(dataset, annotations, videos, phase, split, labels))
            except AnnotationsNotFound as e:  # a phase the download lacks is reported; any other problem stops
                absent.append(f"{phase} (split {split}): {e}")
    if not read:
        raise DatasetError(f"{annotations}: no annotations of {dataset} found: {'; '.join(absent)}")
    out.mkdir(parents=True, exist_ok=True)
    class_names = read[0].class_names
    with open(out / "labels.csv", "w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["id", "name"])
        writer.writerows(enumerate(class_names))
    lists = []
    for s in read:
        list_path = out / f"{s.name}.txt"
        list_path.write_text("\n".join(s.list_lines()) + "\n")
        entry = {"list": str(list_path), "phase": s.phase, "source": str(s.source), "videos": len(s.samples),
                 "notes": s.notes, "missing": [], "unreadable": []}
        if probe:
            entries = [VideoEntry(x.path, x.label, i + 1) for i, x in enumerate(s.samples)]
            index = VideoIndex(list_path, videos, entries, workers=workers)
            entry["probed_now"] = index.probed
            for sample, info in zip(s.samples, index.infos):
                if info.bad:
                    kind = "missing" if info.bad == "missing" else "unreadable"
                    entry[kind].append({"row": sample.where, "path": sample.path, "reason": info.bad,
                                        "detail": info.detail})
        else:
            entry["missing"] = [{"row": x.where, "path": x.path, "reason": "missing"} for x in s.samples
                                if not (videos / x.path).is_file()]
        lists.append(entry)
    report = {"dataset": dataset, "annotations": str(annotations), "videos": str(videos.resolve()),
              "labels": str(out / "labels.csv"), "classes": len(class_names), "lists": lists,
              "not_in_the_annotations": absent, "probed": probe, "seconds": round(time.perf_counter() - start, 2)}
    (out / "prepare_dataset.json").write_text(json.dumps(report, indent=1))
    return report


def run(args) -> int:
    splits = None if args.split == "all" else (int(args.split),)
    report = prepare_dataset(args.name, args.annotations, args.videos, args.out, splits, args.labels,
                             probe=not args.no_probe, workers=args.jobs)
    print(f"prepare-dataset {args.name}: {report['classes']} classes -> {report['labels']}")
    for entry in report["lists"]:
        probed = f", {entry['probed_now']} probed now" if "probed_now" in entry else ""
        print(f"  {entry['list']}: {entry['videos']} videos, {len(entry['missing'])} missing, "
              f"{len(entry['unreadable'])} unreadable{probed}")
        for bad in (entry["missing"] + entry["unreadable"])[:5]:
            print(f"    {bad['row']}: {bad['path']} ({bad['reason']}{': ' + bad['detail'] if bad.get('detail') else ''})")
        if len(entry["missing"]) + len(entry["unreadable"]) > 5:
            print(f"    ... all in {Path(args.out) / 'prepare_dataset.json'}")
    for line in report["not_in_the_annotations"]:
        print(f"  not in the annotations: {line}")
    train = next((e["list"] for e in report["lists"] if e["phase"] == "train"), None)
    val = next((e["list"] for e in report["lists"] if e["phase"] == "val"), None)
    keys = [f"data.root={report['videos']}", f"data.labels={report['labels']}"]
    keys += [f"data.train_list={train}"] if train else []
    keys += [f"data.val_list={val}"] if val else []
    print("train with: --set " + " --set ".join(keys) + "   (bad videos count against data.max_bad_fraction)")
    return 0
