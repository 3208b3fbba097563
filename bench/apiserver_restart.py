#!/usr/bin/env python3
"""What a client sees while a lab's kube-apiserver restarts.

    sudo python3 bench/apiserver_restart.py --root /tmp/khlab [--signal TERM|KILL] [--for 90]

Against a running lab (`kubehoist lab up --root …`): sends the signal to the lab's
supervised kube-apiserver (the supervisor starts it again), and from then on GETs the
controller manager's Lease as the lab's admin every 50 ms, each on a fresh connection,
until `--for` seconds passed or 40 answers in a row were 200 after a failure. Prints the
outcomes in runs: `from-to s  xN  outcome`. kube/retry.py's SETTLING_STATUS rests on it
(a just-restarted server answers 403 or 404 for a moment before it answers 200).

This is a benchmark that prints figures, not a test: it asserts nothing about them.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import time
from pathlib import Path

import httpx2
from lightkube import Client
from lightkube.config.kubeconfig import KubeConfig
from lightkube.core.exceptions import ApiError
from lightkube.resources.coordination_v1 import Lease


def outcome(client: Client) -> str:
    """One GET of the Lease, as a short line."""
    try:
        client.get(Lease, "kube-controller-manager", namespace="kube-system")
        return "200"
    except ApiError as exc:
        return f"{exc.status.code} {exc.status.reason}: {(exc.status.message or '')[:80]}"
    except httpx2.HTTPStatusError as exc:
        return f"{exc.response.status_code} (not a Status) {exc.response.text[:60]!r}"
    except httpx2.HTTPError as exc:
        return f"{type(exc).__name__}: {str(exc)[:80]}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, required=True)
    parser.add_argument("--signal", default="TERM", choices=["TERM", "KILL"])
    parser.add_argument("--for", dest="duration", type=float, default=90.0)
    args = parser.parse_args()
    state = json.loads((args.root / "run/state.json").read_text())
    pid = int(state["processes"]["kube-apiserver"]["pid"])
    config = KubeConfig.from_file(str(args.root / "admin.conf"))
    runs: list[tuple[str, float, float, int]] = []  # (outcome, first s, last s, count)
    start = time.monotonic()
    os.kill(pid, getattr(signal, f"SIG{args.signal}"))
    print(f"SIG{args.signal} to kube-apiserver (pid {pid})")
    while time.monotonic() - start < args.duration:
        client = Client(config, trust_env=False, timeout=httpx2.Timeout(2.0))
        got = outcome(client)
        client.close()
        now = time.monotonic() - start
        if runs and runs[-1][0] == got:
            runs[-1] = (got, runs[-1][1], now, runs[-1][3] + 1)
        else:
            runs.append((got, now, now, 1))
        if got == "200" and len(runs) > 1 and runs[-1][3] > 40:
            break
        time.sleep(0.05)
    for got, first, last, count in runs:
        print(f"{first:7.2f}-{last:7.2f}s  x{count:<4} {got}")


if __name__ == "__main__":
    main()
