"""Every path a config names, checked together before any work (standard library only).

    check_paths(cfg, lists=("train", "val"))    # raises one UserError naming every problem

A run that would stop at its first missing file costs a start per mistake; this reports the
data root, the lists, the label CSVs and the CLIP weights at once, each by its config key
with what to set, on one line.
"""
from __future__ import annotations

from pathlib import Path

from ila_fast.errors import UserError


class ConfigPathError(UserError):
    """One or more paths of a config that do not exist; ``problems`` lists them."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        if len(problems) == 1:
            text = problems[0]
        else:
            text = f"{len(problems)} paths of the config do not exist: " + "; ".join(
                f"({i}) {p}" for i, p in enumerate(problems, 1))
        super().__init__(text)


def _bundled_label_set(name: str) -> bool:
    """A label CSV key may name a label set bundled with ila_fast.data instead of a file."""
    try:
        from ila_fast.data.datasets.names import bundled_labels_path
    except ImportError:  # a build without bundled label sets
        return False
    return bundled_labels_path(name) is not None


def _file_problem(key: str, value: str, fix: str, label_set: bool = False) -> str | None:
    path = Path(value)
    if path.is_file() or (label_set and not path.exists() and _bundled_label_set(value)):
        return None
    what = "is a folder, not a file" if path.is_dir() else "does not exist"
    return f"{key} = {value!r} {what}: {fix}"


def path_problems(cfg, lists=("train", "val"), weights: bool = True) -> list[str]:
    """The problems (one sentence each, naming the key and the fix) of ``cfg``'s paths.

    ``lists``: which of data.train_list / data.val_list the work reads (an unset one it needs
    is a problem too); ``weights``: whether model.clip_weights is read (not when the weights
    come from a checkpoint)."""
    data, model = cfg.data, cfg.model
    problems = []
    if data.root:
        root = Path(data.root)
        if not root.exists():
            problems.append(f"data.root = {data.root!r} does not exist: set data.root to the folder that the list "
                            "files' paths are relative to (--set data.root=DIR)")
        elif not root.is_dir():
            problems.append(f"data.root = {data.root!r} is a file, not a folder: set data.root to the folder that "
                            "the list files' paths are relative to")
    if data.dataset != "list":  # a dataset as downloaded: its annotation folder instead of the lists
        lists = ()
        if not data.annotations or not Path(data.annotations).is_dir():
            problems.append(f"data.annotations = {data.annotations!r} is not a folder: give {data.dataset}'s "
                            "annotation folder (--set data.annotations=DIR)")
    for split in lists:
        key = f"data.{split}_list"
        value = getattr(data, f"{split}_list")
        if not value:
            problems.append(f"{key} is not set: give the list of `relative/path.mp4 label` lines "
                            f"(--set {key}=FILE)")
        else:
            problems.append(_file_problem(key, value, f"give an existing list file (--set {key}=FILE)"))
    if data.labels:
        problems.append(_file_problem("data.labels", data.labels,
                                      "give the label CSV (id,name) or unset it (--set data.labels=FILE)",
                                      label_set=True))
    if model.class_names:
        problems.append(_file_problem("model.class_names", model.class_names,
                                      "give the label CSV (id,name) of the model's classes", label_set=True))
    if weights and model.clip_weights and model.clip_weights != "random":
        problems.append(_file_problem("model.clip_weights", model.clip_weights,
                                      "set it to a local OpenAI or open_clip CLIP file (`ila-fast zoo` lists where "
                                      "each config's CLIP weights come from), or set it to \"random\" for random weights"))
    return [p for p in problems if p]


def check_paths(cfg, lists=("train", "val"), weights: bool = True) -> None:
    """Raise ConfigPathError naming every missing path of ``cfg`` (see ``path_problems``)."""
    problems = path_problems(cfg, lists, weights)
    if problems:
        raise ConfigPathError(problems)
