"""DALI for a lent GPU machine, delivered in parts: one call sends at most 64 MiB (the working
tree included), the DALI wheel and its needs are ~230 MB. Standard library only.

Here (a registry at hand):
    python3 bench/gpu_dali.py split              # download the wheels, tar them, cut into parts
        -> bench/dali/part_00 ... part_NN (each < 60 MiB) and bench/dali/SHA256SUMS
On the GPU machine, one short call per part (its /tmp keeps files ~30 s between calls):
    python3 bench/gpu_dali.py store bench/dali/part_00        # checks the part, keeps it in /tmp/ila-dali
Then the last call stores the last part and runs the suite's DALI stage, which joins the parts,
checks the whole archive's checksum, installs its wheels and runs:
    bench/gpu_suite.sh --only dali --dali-parts /tmp/ila-dali "$OUT"
bench/README.md has the exact calls. ``python3 bench/gpu_dali.py rehearse`` runs split / store /
join / checksum here on a generated payload (or ``--payload FILE``).
"""
from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PARTS = ROOT / "bench" / "dali"
STORE = Path("/tmp/ila-dali")
PART_BYTES = 56 * 2**20  # < 60 MiB: with the ~2 MB working tree a call stays under 64 MiB
# nvidia-dali-cuda130 2.4 and what it requires (unzip -p WHEEL '*/METADATA' | grep Requires-Dist),
# less what the GPU machine has (numpy, packaging, six, pyyaml); and PyAV, which the DALI stage's
# test videos need, so that the last call carries no wheelhouse beside its part.
WHEELS = ["nvidia-dali-cuda130==2.4.0", "nvidia-nvimgcodec-cu13", "nvidia-libnvcomp-cu13", "astunparse", "gast",
          "libcst", "makefun", "nvtx", "optree", "av"]
PLATFORMS = ["manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64",
             "manylinux_2_34_x86_64", "manylinux_2_31_x86_64", "manylinux_2_24_x86_64", "manylinux1_x86_64"]


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(2**20), b""):
            digest.update(block)
    return digest.hexdigest()


def split(payload: Path, parts: Path, part_bytes: int = PART_BYTES) -> list[Path]:
    """Cut ``payload`` into parts/part_NN of ``part_bytes`` at most; SHA256SUMS lists each part's
    checksum and the whole payload's (its name: ``payload``)."""
    if parts.exists():
        shutil.rmtree(parts)
    parts.mkdir(parents=True)
    count = -(-payload.stat().st_size // part_bytes)
    part_bytes = -(-payload.stat().st_size // max(1, count))  # as many parts as needed, of equal size
    written = []
    with open(payload, "rb") as f:
        for index in range(10**3):
            block = f.read(part_bytes)
            if not block:
                break
            written.append(parts / f"part_{index:02d}")
            written[-1].write_bytes(block)
    sums = [f"{sha256(p)}  {p.name}" for p in written] + [f"{sha256(payload)}  payload"]
    (parts / "SHA256SUMS").write_text("\n".join(sums) + "\n")
    return written


def read_sums(path: Path) -> dict[str, str]:
    sums = {}
    for line in path.read_text().splitlines():
        digest, _, name = line.partition("  ")
        if len(digest) != 64 or not name:
            raise ValueError(f"{path}: not a SHA256SUMS line: {line!r}")
        sums[name] = digest
    return sums


def store(part: Path, store_dir: Path = STORE) -> None:
    """Check one part against the SHA256SUMS beside it and keep both in ``store_dir``."""
    sums = read_sums(part.parent / "SHA256SUMS")
    if sums.get(part.name) != sha256(part):
        raise ValueError(f"{part}: checksum differs from {part.parent / 'SHA256SUMS'} (damaged in transit?)")
    store_dir.mkdir(parents=True, exist_ok=True)
    shutil.copy(part.parent / "SHA256SUMS", store_dir / "SHA256SUMS")
    shutil.copy(part, store_dir / f".{part.name}.partial")
    os.replace(store_dir / f".{part.name}.partial", store_dir / part.name)  # whole parts only


def join(store_dir: Path, target: Path) -> Path:
    """Join the stored parts into ``target`` and check the payload's checksum; ValueError naming
    the missing parts or the mismatch."""
    sums = read_sums(store_dir / "SHA256SUMS")
    names = sorted(n for n in sums if n.startswith("part_"))
    missing = [n for n in names if not (store_dir / n).is_file()]
    if missing:
        raise ValueError(f"{store_dir}: parts missing: {', '.join(missing)} (the machine keeps /tmp only ~30 s "
                         "between calls: send the parts in calls that follow each other at once)")
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target, "wb") as f:
        for name in names:
            with open(store_dir / name, "rb") as part:
                shutil.copyfileobj(part, f)
    if sha256(target) != sums["payload"]:
        raise ValueError(f"{target}: joined payload's checksum differs from SHA256SUMS")
    return target


def join_parts(store_dir: Path, work: Path) -> list[Path]:
    """The suite's entry: join, check, unpack the wheels; returns their paths."""
    archive = join(store_dir, work / "dali.tar")
    with tarfile.open(archive) as tar:
        for member in tar.getmembers():
            if not (member.isfile() and member.name.endswith(".whl") and "/" not in member.name):
                raise ValueError(f"{archive}: unexpected member {member.name!r} (only wheels at the top)")
        tar.extractall(work / "wheels")
    return sorted((work / "wheels").glob("*.whl"))


def download(target: Path, python: str) -> Path:
    """The DALI wheels for CPython 3.12 on x86_64 (the GPU machine's), tarred into ``target``."""
    wheels = target.parent / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    argv = [python, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", "--python-version", "3.12",
            "--implementation", "cp", *[a for p in PLATFORMS for a in ("--platform", p)], "-d", str(wheels), *WHEELS]
    subprocess.run(argv, check=True)
    with tarfile.open(target, "w") as tar:  # no compression: wheels are zip files already
        for wheel in sorted(wheels.glob("*.whl")):
            tar.add(wheel, arcname=wheel.name)
    return target


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("split", help="download the DALI wheels (or take --payload), cut into parts")
    p.add_argument("--payload", help="an archive of wheels to cut instead of downloading")
    p.add_argument("--parts", default=str(PARTS))
    p.add_argument("--part-mib", type=float, default=PART_BYTES / 2**20)
    p = sub.add_parser("store", help="on the GPU machine: check one part, keep it in /tmp/ila-dali")
    p.add_argument("part")
    p.add_argument("--store", default=str(STORE))
    p = sub.add_parser("join", help="join the stored parts and check the checksum")
    p.add_argument("--store", default=str(STORE))
    p.add_argument("--target", default=None)
    p = sub.add_parser("rehearse", help="split / store / join / checksum here")
    p.add_argument("--payload", help="default: --payload-mib of generated bytes")
    p.add_argument("--payload-mib", type=int, default=150)
    p.add_argument("--part-mib", type=float, default=PART_BYTES / 2**20)
    args = parser.parse_args(argv)
    try:
        if args.command == "split":
            payload = Path(args.payload) if args.payload else download(Path(tempfile.mkdtemp()) / "dali.tar",
                                                                       sys.executable)
            written = split(payload, Path(args.parts), int(args.part_mib * 2**20))
            print(f"{len(written)} parts of <= {args.part_mib:.0f} MiB in {args.parts} "
                  f"({payload.stat().st_size / 2**20:.0f} MiB in all)")
        elif args.command == "store":
            store(Path(args.part), Path(args.store))
            held = sorted(p.name for p in Path(args.store).glob("part_*"))
            print(f"stored {args.part}; {args.store} holds {', '.join(held)}")
        elif args.command == "join":
            target = join(Path(args.store), Path(args.target or Path(args.store) / "payload"))
            print(f"joined {target}: checksum ok")
        else:
            rehearse(args.payload, int(args.part_mib * 2**20), args.payload_mib)
    except (OSError, ValueError, subprocess.CalledProcessError) as error:
        print(f"gpu_dali: {error}", file=sys.stderr)
        return 2
    return 0


def rehearse(payload: str | None, part_bytes: int, payload_mib: int = 150) -> None:
    """What the calls do, here: cut, store each part (checked) in a stand-in for the machine's
    /tmp, join, check; then that a damaged part and a missing one are refused."""
    with tempfile.TemporaryDirectory(prefix="ila-dali-rehearse-") as tmp:
        tmp = Path(tmp)
        if payload is None:
            payload = tmp / "payload.bin"
            with open(payload, "wb") as f:
                for i in range(payload_mib):
                    f.write(hashlib.sha256(str(i).encode()).digest() * 32768)  # 1 MiB each
        payload = Path(payload)
        parts = split(payload, tmp / "parts", part_bytes)
        for part in parts:
            assert part.stat().st_size <= part_bytes
            store(part, tmp / "store")
        joined = join(tmp / "store", tmp / "joined")
        assert joined.read_bytes() == payload.read_bytes()
        print(f"rehearsal: {payload.stat().st_size / 2**20:.1f} MiB in {len(parts)} parts of <= "
              f"{part_bytes / 2**20:.0f} MiB: stored, joined, checksum ok")
        last = tmp / "store" / parts[-1].name
        data = bytearray(last.read_bytes())
        data[len(data) // 2] ^= 1
        last.write_bytes(bytes(data))
        try:
            join(tmp / "store", tmp / "joined")
            raise AssertionError("a damaged part was not noticed")
        except ValueError as error:
            print(f"rehearsal: a damaged part is refused: {error}")
        last.unlink()
        try:
            join(tmp / "store", tmp / "joined")
            raise AssertionError("a missing part was not noticed")
        except ValueError as error:
            print(f"rehearsal: a missing part is refused: {str(error)[:80]}...")


if __name__ == "__main__":
    sys.exit(main())
