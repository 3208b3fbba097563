#!/usr/bin/env python3
"""What the lab costs: `lab up` time and the memory of the whole lab, per shape.

    sudo python3 bench/labcost.py [--reps 3] [--shapes 1x2,3x2] [--root /tmp/kh-labcost] \
        [--host-port 16701] [--baseline-src DIR] [--settle 30] [--json PATH]

Shapes are CONTROL_PLANESxWORKERS. For every repetition and shape, in turn (and with
`--baseline-src`, the same with the kubehoist found in that source tree, A B A B …, so
the two are compared under the same load): `lab down --purge`, then `lab up` timed
(wall clock of the CLI, which returns once every node is Ready), `--settle` seconds for
the static pods to start, then the memory of every process of the lab:

* the supervisor and every process descending from it (etcd, kube-apiserver, the nodes'
  init, containerd, kubelet), and
* every process in the lab's cgroup tree `/kubehoist-<lab id>` in any hierarchy (the
  containers, whose shims are not the supervisor's descendants),

summed as PSS (`/proc/PID/smaps_rollup`: shared pages split between their users, so
the sum is what the lab holds) and as RSS; then `lab down` timed.

This is a benchmark that prints figures, not a test: it asserts nothing about them.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

CGROUP_FS = Path("/sys/fs/cgroup")


def log(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


@dataclass
class Rep:
    impl: str
    shape: str
    up_s: float
    down_s: float
    processes: int
    pss_mib: float
    rss_mib: float


def cli(src: Path | None, *args: str, timeout: float = 900) -> float:
    """Run `python -m kubehoist ARGS` (from `src` when given); its wall time."""
    env = dict(os.environ)
    if src is not None:
        env["PYTHONPATH"] = str(src)
    t0 = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "kubehoist", *args],
        capture_output=True, text=True, env=env, timeout=timeout, check=False,
    )  # fmt: skip
    if proc.returncode != 0:
        raise RuntimeError(f"kubehoist {' '.join(args)} exited {proc.returncode}: {proc.stderr}")
    return time.monotonic() - t0


def _parents() -> dict[int, int]:
    out: dict[int, int] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                with open(f"/proc/{entry.name}/stat") as fh:
                    out[int(entry.name)] = int(fh.read().rpartition(")")[2].split()[1])
            except (OSError, ValueError, IndexError):
                pass
    return out


def lab_processes(root: Path) -> set[int]:
    pids: set[int] = set()
    try:
        top = int((root / "run/supervisor.pid").read_text().strip())
    except (OSError, ValueError):
        top = 0
    if top:
        parents = _parents()
        pids.add(top)
        grew = True
        while grew:
            more = {p for p, pp in parents.items() if pp in pids and p not in pids}
            pids |= more
            grew = bool(more)
    lab = (
        json.loads((root / "lab.json").read_text()).get("lab_id")
        if (root / "lab.json").exists()
        else None
    )
    if lab and CGROUP_FS.is_dir():
        for hier in CGROUP_FS.iterdir():
            tree = hier / f"kubehoist-{lab}"
            for dirpath, _dirs, _files in os.walk(tree):
                with contextlib.suppress(OSError):
                    pids |= {int(x) for x in Path(dirpath, "cgroup.procs").read_text().split()}
    return pids


def memory_mib(pids: set[int]) -> tuple[int, float, float]:
    """How many of `pids` are alive, their summed PSS and RSS in MiB."""
    alive, pss, rss = 0, 0, 0
    for pid in pids:
        try:
            text = Path(f"/proc/{pid}/smaps_rollup").read_text()
        except OSError:
            continue
        fields = {}
        for line in text.splitlines()[1:]:
            name, _, rest = line.partition(":")
            parts = rest.split()
            if parts and parts[0].isdigit():
                fields[name] = int(parts[0])
        if "Pss" not in fields:
            continue  # a kernel thread or a zombie
        alive += 1
        pss += fields["Pss"]
        rss += fields.get("Rss", 0)
    return alive, pss / 1024, rss / 1024


def one(impl: str, src: Path | None, root: Path, port: int, shape: str, settle: float) -> Rep:
    cps, workers = (int(x) for x in shape.split("x"))
    cli(src, "lab", "down", "--purge", "--root", str(root))
    up = cli(
        src, "lab", "up", "--root", str(root), "--host-port", str(port),
        "--control-planes", str(cps), "--workers", str(workers),
    )  # fmt: skip
    time.sleep(settle)
    count, pss, rss = memory_mib(lab_processes(root))
    down = cli(src, "lab", "down", "--purge", "--root", str(root))
    rep = Rep(impl, shape, round(up, 2), round(down, 2), count, round(pss, 1), round(rss, 1))
    log(f"  {impl} {shape}: {asdict(rep)}")
    return rep


def table(reps: list[Rep], impls: list[str], shapes: list[str]) -> str:
    rows = [
        "| shape (CP x workers) | figure | "
        + " | ".join(f"{i} median (min–max)" for i in impls)
        + (" | ratio" if len(impls) == 2 else "")
        + " |",
        "| --- | --- | "
        + " | ".join("---:" for _ in impls)
        + (" | ---:" if len(impls) == 2 else "")
        + " |",
    ]
    for shape in shapes:
        for figure, unit in (
            ("up_s", "s"),
            ("down_s", "s"),
            ("pss_mib", "MiB"),
            ("rss_mib", "MiB"),
            ("processes", ""),
        ):
            cells, medians = [], []
            for impl in impls:
                values = [getattr(r, figure) for r in reps if r.impl == impl and r.shape == shape]
                if not values:
                    cells.append("not observed")
                    continue
                med = statistics.median(values)
                medians.append(med)
                cells.append(f"{med:g} {unit} ({min(values):g}–{max(values):g})".replace("  ", " "))
            ratio = (
                f" | {medians[0] / medians[1]:.2f}×"
                if len(medians) == 2 and medians[1]
                else (" | –" if len(impls) == 2 else "")
            )
            rows.append(f"| {shape} | {figure} | " + " | ".join(cells) + ratio + " |")
    return "\n".join(rows)


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--shapes", default="1x2,3x2")
    ap.add_argument("--root", type=Path, default=Path("/tmp/kh-labcost"))
    ap.add_argument("--host-port", type=int, default=16701)
    ap.add_argument("--settle", type=float, default=30.0)
    ap.add_argument("--baseline-src", type=Path, help="another kubehoist source tree (its src/)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("labcost: the lab needs root", file=sys.stderr)
        return 2
    shapes = args.shapes.split(",")
    impls: list[tuple[str, Path | None]] = [("current", None)]
    if args.baseline_src:
        impls.append(("baseline", args.baseline_src.resolve()))
    reps: list[Rep] = []
    try:
        for rep in range(1, args.reps + 1):
            for shape in shapes:
                for impl, src in impls:
                    log(f"rep {rep}/{args.reps} {impl} {shape}")
                    reps.append(
                        one(impl, src, args.root.resolve(), args.host_port, shape, args.settle)
                    )
    finally:
        for _impl, src in impls:
            down = ["lab", "down", "--purge", "--root", str(args.root)]
            subprocess.run(
                [sys.executable, "-m", "kubehoist", *down],
                env={**os.environ, **({"PYTHONPATH": str(src)} if src else {})},
                capture_output=True, check=False,
            )  # fmt: skip
    machine = (
        f"nproc={os.cpu_count()}, Linux {platform.release()}, Python {platform.python_version()}"
    )
    print(f"machine: {machine}; reps {args.reps}; settle {args.settle:g} s")
    print(table(reps, [i for i, _ in impls], shapes))
    if args.json:
        args.json.write_text(
            json.dumps({"machine": machine, "reps": [asdict(r) for r in reps]}, indent=1)
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
