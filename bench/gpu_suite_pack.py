"""The GPU suite's packing: what comes back from a lent GPU machine is at most 8 files of under
16 MiB each, at most 2 folders deep, named in letters, digits, '.', '_' and '-'. The suite writes
three: summary.json (every figure: the environment, each stage's status and all its JSON rows),
tables.txt (each stage's printed tables, for people) and logs.tar.gz (every log and JSON file;
no videos, no checkpoints: those stay in the scratch folder). Standard library only.
"""
from __future__ import annotations

import io
import json
import re
import tarfile
import time
from pathlib import Path

MAX_FILES = 8
MAX_BYTES = 16 * 2**20
MAX_FOLDERS = 2
SAFE_NAME = re.compile(r"^[A-Za-z0-9._-]+$")
LOG_CAP = 4 * 2**20       # bytes kept of one log in the archive: its head and its tail
TABLE_LINES = 400         # lines of one stage's printed output kept in tables.txt


def check_layout(out: Path) -> dict:
    """Every file under ``out`` and whether the set would come back whole."""
    files, problems = [], []
    for path in sorted(p for p in out.rglob("*") if p.is_file() or p.is_symlink()):
        rel = path.relative_to(out)
        size = path.lstat().st_size
        files.append({"path": str(rel), "bytes": size})
        if path.is_symlink():
            problems.append(f"{rel}: a link")
        if size >= MAX_BYTES:
            problems.append(f"{rel}: {size} B >= 16 MiB")
        if len(rel.parts) - 1 > MAX_FOLDERS:
            problems.append(f"{rel}: more than {MAX_FOLDERS} folders deep")
        if not all(SAFE_NAME.match(part) for part in rel.parts):
            problems.append(f"{rel}: a name with characters other than letters, digits, '.', '_', '-'")
    if len(files) > MAX_FILES:
        problems.append(f"{len(files)} files > {MAX_FILES}")
    return {"ok": not problems, "files": files, "problems": problems}


def _capped(data: bytes, cap: int) -> bytes:
    if len(data) <= cap:
        return data
    head = cap // 4
    return data[:head] + f"\n[... {len(data) - cap} bytes cut by the packer ...]\n".encode() + data[-(cap - head):]


def write_logs(work: Path, target: Path, cap: int = LOG_CAP) -> list[str]:
    """logs.tar.gz of work/logs/*, work/env.json and work/json/**/*.json, each capped at ``cap``."""
    members = sorted((work / "logs").glob("*")) + sorted((work / "json").rglob("*.json"))
    if (work / "env.json").is_file():
        members.append(work / "env.json")
    names = []
    with tarfile.open(target, "w:gz") as tar:
        for path in members:
            if not path.is_file():
                continue
            data = _capped(path.read_bytes(), cap)
            info = tarfile.TarInfo(str(path.relative_to(work)))
            info.size, info.mtime = len(data), int(path.stat().st_mtime)
            tar.addfile(info, io.BytesIO(data))
            names.append(info.name)
    return names


def tables_text(summary: dict, work: Path) -> str:
    suite, env = summary["suite"], summary.get("env", {})
    lines = [f"ila-fast GPU suite ({suite['mode']}): {suite.get('status')}, {suite.get('elapsed_s')} s of "
             f"{suite['budget_s']:.0f} s; commit {suite['commit']}",
             "device: " + ", ".join(f"{k} {env[k]}" for k in ("device", "driver", "torch", "cuda", "triton", "python")
                                     if k in env),
             f"command: {suite['command']}", ""]
    pip = summary.get("setup", {}).get("pip")
    if pip:
        lines.append(f"wheels: {len(pip['wheels'])} installed in {pip['seconds']} s (rc {pip['rc']})")
    for key, value in summary.get("setup", {}).items():
        if key != "pip":
            lines.append(f"{key}: {value}")
    for stage in summary["stages"]:
        head = f"== ({stage['letter']}) {stage['stage']}: {stage['status']}"
        if "seconds" in stage:
            head += f" in {stage['seconds']} s (limit {stage['limit_s']} s, budget {stage['budget_s']} s)"
        lines += ["", head, f"   {stage['title']}"]
        for name, data in stage.get("json", {}).items():
            if isinstance(data, dict) and "counts" in data:
                lines.append(f"   {name}: {data['counts']}")
            if isinstance(data, dict) and "rows" in data and data.get("rows") and \
                    all("outcome" in r for r in data["rows"]):
                for row in data["rows"]:
                    if row["outcome"] == "failed":
                        lines.append(f"   FAILED {row['test']}: {row.get('message', '').splitlines()[-1:]}")
            if isinstance(data, dict) and data.get("checks") and isinstance(data["checks"], dict):
                lines.append(f"   checks: {data['checks']}")
            if isinstance(data, dict) and not data.get("complete", True):
                rows = data.get("rows") or data.get("phases") or []
                lines.append(f"   {name}: cut short; {len(rows)} row(s) saved before the cut")
        out = work / "logs" / f"{stage['stage']}.out"
        if out.is_file():
            text = out.read_text(errors="replace").splitlines()
            if len(text) > TABLE_LINES:
                text = text[:50] + [f"[... {len(text) - TABLE_LINES} lines cut ...]"] + text[-(TABLE_LINES - 50):]
            lines += ["   " + line for line in text]
    return "\n".join(lines) + "\n"


def pack(summary: dict, work: Path, out: Path) -> dict:
    """Write summary.json, tables.txt and logs.tar.gz into ``out``; return (and record in
    summary.json) the layout check of ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    summary["suite"]["packed_utc"] = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())
    (out / "tables.txt").write_text(tables_text(summary, work)[:MAX_BYTES // 2])
    cap = LOG_CAP
    while True:
        summary["logs"] = write_logs(work, out / "logs.tar.gz", cap)
        if (out / "logs.tar.gz").stat().st_size < MAX_BYTES - 2**20 or cap < 2**14:
            break
        cap //= 4
    text = json.dumps(summary, indent=1, default=str)
    if len(text) >= MAX_BYTES - 2**20:  # every figure is in the archive too: keep the statuses here
        for stage in summary["stages"]:
            stage["json"] = {k: "in logs.tar.gz (too large for summary.json)" for k in stage.get("json", {})}
    for _ in range(2):  # the layout includes summary.json itself
        summary["layout"] = check_layout(out)
        (out / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
    summary["layout"] = check_layout(out)
    return summary["layout"]
