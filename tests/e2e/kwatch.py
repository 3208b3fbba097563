"""`kubectl get --watch` of a selection of pods, read by a thread: what e2e tests use to
see every event the API server sends about the pods they look at (a process of its own,
so that closing it never pulls a socket from under a reader)."""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections.abc import Callable
from typing import Any

from kubehoist.lab.binaries import locate


class KubectlWatch:
    """Runs `kubectl get pods -n <namespace> <selection> --watch --output-watch-events -o
    json` and calls `on_event(t, type, object)` for every event (t: this process's
    monotonic clock when it was read). `error` says why the watch ended early, if it did."""

    def __init__(
        self,
        kubeconfig: str,
        *selection: str,
        on_event: Callable[[float, str, dict[str, Any]], None],
        namespace: str = "kube-system",
        name: str = "kubectl-watch",
    ) -> None:
        self.on_event = on_event
        self.error: str | None = None
        self._stop = False
        self._proc = subprocess.Popen(
            [
                str(locate().path("kubectl")), "--kubeconfig", kubeconfig,
                "get", "pods", "-n", namespace, *selection,
                "--watch", "--output-watch-events", "-o", "json",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        assert self._proc.stdout is not None
        decoder, buffer = json.JSONDecoder(), ""
        for line in self._proc.stdout:  # one JSON document per event, over several lines
            buffer += line
            try:
                doc, end = decoder.raw_decode(buffer.lstrip())
            except ValueError:
                continue
            buffer = buffer.lstrip()[end:]
            self.on_event(time.monotonic(), doc["type"], doc["object"])
        if not self._stop:
            assert self._proc.stderr is not None
            self.error = f"kubectl exited {self._proc.wait()}: {self._proc.stderr.read()}"

    def close(self) -> None:
        self._stop = True
        self._proc.terminate()
        self._proc.wait(10)
        self._thread.join(10)
