"""Datasets in the official list format, and the probe index of their videos.

A list file has one video a line, ``relative/path.mp4 <label>`` (docs/specification.md#2-data-format); a label CSV
``id,name`` names the classes. Every video is probed once (frame count, size, rotation, codec,
timestamps, key frames) with PyAV and the results are cached beside the list, keyed by each
file's size and mtime, so later runs and epochs never probe again unless a file changed.
"""
from __future__ import annotations

import csv
import hashlib
import json
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from .probe import VideoInfo, missing_reason, probe_video

__all__ = ["DatasetError", "VideoDataset", "VideoEntry", "VideoIndex", "VideoInfo", "probe_video", "read_labels",
           "read_list"]

log = logging.getLogger("ila_fast.data")

INDEX_VERSION = 6  # 2: main stream, frame-index rule ("pts" / "count"), DALI issues; 3: container; 4: its DALI issue;
# 5: the reorder depth; 6: packed B-frames (counted in every container)
SAVE_EVERY_S = 60.0  # a long probe writes what it has this often


class DatasetError(ValueError):
    """A list or label file that cannot be used; the message names the file and line."""


@dataclass(frozen=True)
class VideoEntry:
    path: str    # relative to the data root, as written in the list
    label: int
    line: int    # 1-based line in the list file


def _is_int(text: str) -> bool:
    return text.lstrip("+-").isdigit()


def _text_lines(path: Path) -> list[str]:
    """The lines of a UTF-8 text file (a leading BOM dropped); a byte that is not UTF-8 names file:line."""
    lines = []
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            if lineno == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]  # a UTF-8 byte-order mark (Windows editors write one)
            if b"\x00" in raw:  # a binary file, or UTF-16 text (every other byte NUL)
                raise DatasetError(f"{path}:{lineno}: contains a NUL byte at column {raw.index(0) + 1}; a list or "
                                   "label file is UTF-8 text (re-save a UTF-16 file as UTF-8)")
            try:
                lines.append(raw.decode("utf-8").rstrip("\r\n"))
            except UnicodeDecodeError as e:
                raise DatasetError(f"{path}:{lineno}: byte 0x{raw[e.start]:02x} at column {e.start + 1} is not "
                                   "UTF-8; save the file as UTF-8") from None
    return lines


def read_labels(csv_path: str | os.PathLike) -> list[str]:
    """Class names from a label CSV (``id,name``; a header line is optional); ids must be 0..K-1.

    A bundled label set's name (``kinetics400``, ``ssv2``, ``ucf101``, ...; see ``ila_fast.data.datasets``)
    works as well as a path: a file of that name wins.
    """
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        from .datasets.names import bundled_labels_path  # noqa: PLC0415

        bundled = bundled_labels_path(str(csv_path))
        if bundled is None:
            raise DatasetError(f"{csv_path}: label CSV not found (nor a bundled label set's name)")
        csv_path = bundled
    names: dict[int, str] = {}
    text = "\n".join(_text_lines(csv_path))
    for lineno, row in enumerate(csv.reader(text.split("\n")), 1):
        if not row or not "".join(row).strip():
            continue
        if len(row) < 2:
            raise DatasetError(f"{csv_path}:{lineno}: expected 'id,name', got {','.join(row)!r}")
        key, name = row[0].strip(), ",".join(row[1:]).strip()
        if not _is_int(key):
            # Only the first line may be a header, and only when its id field is not a number:
            # a data row always has an integer id, so it is never taken for a header.
            if lineno == 1 and not names:
                continue
            raise DatasetError(f"{csv_path}:{lineno}: class id {key!r} is not an integer")
        cid = int(key)
        if cid in names:
            raise DatasetError(f"{csv_path}:{lineno}: class id {cid} appears twice")
        names[cid] = name
    if not names:
        raise DatasetError(f"{csv_path}: no classes")
    if sorted(names) != list(range(len(names))):
        missing = sorted(set(range(max(names) + 1)) - set(names))[:5]
        raise DatasetError(f"{csv_path}: class ids must be 0..{len(names) - 1} without gaps; "
                           f"missing {missing}")
    return [names[i] for i in range(len(names))]


def read_list(list_path: str | os.PathLike, root: str | os.PathLike, num_classes: int | None = None,
              check_files: bool = True, missing_policy: str = "skip") -> list[VideoEntry]:
    """Parse a list file; malformed lines and out-of-range labels raise naming file and line.

    Missing videos (no file, a directory, a dangling symlink) are reported once, up front, with
    their count and the first few lines; ``missing_policy="error"`` refuses the list instead,
    otherwise the probe marks them bad (reason ``missing``) and they are replaced like others.
    """
    list_path, root = Path(list_path), Path(root)
    if not list_path.is_file():
        raise DatasetError(f"{list_path}: list file not found")
    entries: list[VideoEntry] = []
    for lineno, raw in enumerate(_text_lines(list_path), 1):
        line = raw.strip()
        if not line:
            continue
        parts = line.rsplit(None, 1)  # paths may contain spaces; the label is the last field
        if len(parts) != 2:
            raise DatasetError(f"{list_path}:{lineno}: expected 'relative/path label', got {line!r}")
        path, label = parts
        try:
            label = int(label)
        except ValueError:
            raise DatasetError(f"{list_path}:{lineno}: label {label!r} is not an integer") from None
        if label < 0 or (num_classes is not None and label >= num_classes):
            bound = f"0..{num_classes - 1}" if num_classes is not None else ">= 0"
            raise DatasetError(f"{list_path}:{lineno}: label {label} is out of range ({bound})")
        entries.append(VideoEntry(path, label, lineno))
    if not entries:
        raise DatasetError(f"{list_path}: no videos listed")
    if check_files and not root.is_dir():  # else every video would be reported missing, one by one
        raise DatasetError(f"data.root = {str(root)!r} does not exist{' as a folder' if root.exists() else ''}: set "
                           f"data.root to the folder that the paths of {list_path} are relative to")
    if check_files:
        report_missing(list_path, root, [(f"line {e.line}", e.path) for e in entries], missing_policy)
    return entries


def report_missing(source, root: Path, rows: list[tuple[str, str]], policy: str = "skip") -> int:
    """Report the listed videos (``(where, relative path)`` rows) that are not files under ``root``, once,
    with their count and the first few rows; ``policy="error"`` refuses them. Returns how many are missing."""
    missing = [(where, path, why) for where, path in rows if (why := missing_reason(Path(root) / path))]
    if missing:
        shown = "; ".join(f"{where}: {path} ({why})" for where, path, why in missing[:5])
        more = "; ..." if len(missing) > 5 else ""
        text = (f"{source}: {len(missing)} of {len(rows)} listed videos are missing under data root "
                f"{root} ({shown}{more})")
        if policy == "error":
            raise DatasetError(f"{text}. Check data.root or remove them from the list "
                               "(data.missing = 'skip' counts them as bad videos instead).")
        log.warning("%s; they are skipped as bad videos (reason 'missing')", text)
    return len(missing)


# ---------------------------------------------------------------- the cached index

def index_path_for(list_path: Path, index_dir: str | os.PathLike | None) -> Path:
    if index_dir is None:
        return list_path.with_name(list_path.name + ".index.json")
    digest = hashlib.sha1(str(list_path.resolve()).encode()).hexdigest()[:10]
    return Path(index_dir) / f"{list_path.name}.{digest}.index.json"


class VideoIndex:
    """Probe results for every video of a list, cached in a JSON file beside it.

    An entry is reused while its file keeps the same size and mtime; changed or new files
    are probed again (``probed`` counts them), so no epoch and no later run probes twice.
    """

    def __init__(self, list_path: str | os.PathLike, root: str | os.PathLike, entries: list[VideoEntry],
                 index_dir: str | os.PathLike | None = None, workers: int = 4):
        self.list_path, self.root = Path(list_path), Path(root)
        self.path = index_path_for(self.list_path, index_dir)
        cached = self._load()
        self.infos: list[VideoInfo] = []
        self.probed = 0
        todo: list[tuple[int, Path, tuple[int, int]]] = []
        fresh: dict[str, dict] = {}
        for i, entry in enumerate(entries):
            full = self.root / entry.path
            why = missing_reason(full)
            if why:  # not cached: it is looked for again next run
                self.infos.append(VideoInfo(bad="missing", detail=why))
                continue
            st = full.stat()
            stamp = (st.st_size, st.st_mtime_ns)
            hit = cached.get(entry.path)
            if hit is not None and tuple(hit["stamp"]) == stamp:
                self.infos.append(VideoInfo.from_json(hit["info"]))
                fresh[entry.path] = hit
            else:
                self.infos.append(None)  # type: ignore[arg-type]
                todo.append((i, full, stamp))
        if todo:
            log.info("probing %d videos of %s (cached in %s)", len(todo), self.list_path, self.path)
            saved = time.monotonic()
            with ThreadPoolExecutor(max(1, workers)) as pool:  # PyAV releases the GIL while demuxing
                for (i, _, stamp), info in zip(todo, pool.map(lambda t: probe_video(t[1]), todo)):
                    self.infos[i] = info
                    fresh[entries[i].path] = {"stamp": list(stamp), "info": info.to_json()}
                    if time.monotonic() - saved > SAVE_EVERY_S:  # an interrupted probe resumes from here
                        self._save(fresh)
                        saved = time.monotonic()
            self.probed = len(todo)
            self._save(fresh)

    def _load(self) -> dict:
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}
        if data.get("version") != INDEX_VERSION or data.get("root") != str(self.root.resolve()):
            return {}
        return data.get("videos", {})

    def _save(self, videos: dict) -> None:
        data = {"version": INDEX_VERSION, "list": str(self.list_path.resolve()),
                "root": str(self.root.resolve()), "videos": videos}
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_name(self.path.name + f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps(data))
            os.replace(tmp, self.path)
        except OSError as e:  # a read-only data folder: keep going, probe again next run
            log.warning("cannot write the probe index %s (%s); set data.index_dir to a writable folder",
                        self.path, e)


@dataclass
class VideoDataset:
    """A parsed list with its probe index: everything a sample plan and a backend need."""
    list_path: Path
    root: Path
    entries: list[VideoEntry]
    infos: list[VideoInfo]
    class_names: list[str] | None = None

    @classmethod
    def load(cls, list_path, root, labels_csv=None, num_classes: int | None = None, index_dir=None,
             workers: int = 4, missing: str = "skip") -> "VideoDataset":
        names = read_labels(labels_csv) if labels_csv else None
        if names is not None and num_classes is not None and len(names) != num_classes:
            raise DatasetError(f"data.labels = {str(labels_csv)!r} has {len(names)} classes, but model.num_classes = "
                               f"{num_classes}: set model.num_classes = {len(names)} (--set model.num_classes="
                               f"{len(names)}) or give the label CSV of the model's {num_classes} classes")
        k = num_classes if num_classes is not None else (len(names) if names else None)
        entries = read_list(list_path, root, k, missing_policy=missing)
        return cls.from_entries(list_path, root, entries, names, index_dir=index_dir, workers=workers)

    @classmethod
    def from_entries(cls, list_path, root, entries: list[VideoEntry], class_names=None, index_dir=None,
                     workers: int = 4) -> "VideoDataset":
        """Entries already read (a list file, or a dataset adapter's rows); ``list_path`` names the probe
        index (beside it, or in ``index_dir``) and the bad-video report."""
        index = VideoIndex(list_path, root, entries, index_dir=index_dir, workers=workers)
        ds = cls(Path(list_path), Path(root), entries, index.infos, class_names)
        ds.index = index
        return ds

    def __len__(self) -> int:
        return len(self.entries)

    @property
    def paths(self) -> list[str]:
        return [e.path for e in self.entries]

    @property
    def labels(self) -> list[int]:
        return [e.label for e in self.entries]

    def full_path(self, i: int) -> str:
        return str(self.root / self.entries[i].path)
