"""The lab's log shipper: keeps every container's log and lifetime after the kubelet
has forgotten them.

On a real cluster fluent-bit or promtail does this; in the lab one `LogKeeper` per
node does. The real kubelet deletes a pod's logs (`/var/log/pods/...`) when it removes
the pod's containers and records no history of container starts, yet
`kubehoist lab leaders` must judge every instance that ever ran, including those of
pods that are gone. So, about once a second, the keeper:

- lists the node's containers through CRI (`crictl ps -a -o json`, inside the node),
  and inspects (`crictl inspect -q -o json`) only those that are new or whose state
  changed;
- appends the new bytes of each container's log (CRI format, as containerd wrote
  them) to its archive, following a rotated or replaced file and reading a deleted
  one to its end through the descriptor it holds:

      <node-root>/var/log/pods-archive/<ns>_<pod>_<uid>/<container>/<restartCount>.log

- writes beside it, atomically, `<restartCount>.state.json`
  (`logarchive.STATE_FIELDS`): the container's ID, its start, its end (`finishedAt`
  null while running), exit code and reason, and who it was. A container that
  disappears before its end was seen is finished with reason "Unknown",
  `finishedAtEstimated: true` and its last log line's time (its start if it logged
  nothing).

One archive file belongs to one container: a static pod whose manifest comes back
has the same UID and restarts at count 0, so a second container for a taken
`<n>.log` is archived as `<n>.<id12>.log` (`logarchive.ARCHIVE_LOG`). What the keeper
has copied is checkpointed in `pods-archive/.logkeeper.json`, so a restarted keeper
resumes instead of copying again.

The CRI calls go through one injectable function (`Crictl`), so the bookkeeping is
tested with recorded crictl output. The archive's format and the reading of crictl's
output are `kubehoist.lab.logarchive`'s; this module holds the keeper and its crictl.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Final

from kubehoist.errors import KubehoistError
from kubehoist.lab.logarchive import (
    ARCHIVE_DIR,
    CREATED,
    ContainerRecord,
    finish_unknown,
    parse_inspect,
    parse_ps,
    read_state,
    state_document,
    state_path,
    write_json_atomic,
)
from kubehoist.lab.node import enter_argv
from kubehoist.lab.nodeconfig import CONTAINERD_SOCKET
from kubehoist.lab.spec import LabNode, LabSpec

log = logging.getLogger("kubehoist.lab.logkeeper")

CHECKPOINT_NAME: Final = ".logkeeper.json"
CRI_ENDPOINT: Final = f"unix://{CONTAINERD_SOCKET}"
DEFAULT_INTERVAL_S: Final = 1.0

_CHUNK: Final = 1 << 20

Crictl = Callable[[Sequence[str]], str]
"""Runs `crictl <args>` against the node's containerd and returns its stdout; raises
KubehoistError if crictl fails."""


# --- crictl in a node -------------------------------------------------------------------------


def node_crictl(spec: LabSpec, node: LabNode, crictl: Path, *, timeout: float = 10.0) -> Crictl:
    """A `Crictl` that runs the binary inside the node's namespaces (`enter_argv`)."""

    def run(args: Sequence[str]) -> str:
        try:
            prefix = enter_argv(spec, node)
        except OSError as exc:
            raise KubehoistError(f"node {node.name} is not running: {exc}") from exc
        argv = [*prefix, str(crictl), "--runtime-endpoint", CRI_ENDPOINT, *args]
        try:
            proc = subprocess.run(
                argv, capture_output=True, text=True, timeout=timeout, check=False
            )
        except subprocess.TimeoutExpired as exc:
            raise KubehoistError(
                f"crictl {args[0]} on {node.name}: no answer in {timeout:g}s"
            ) from exc
        except OSError as exc:
            raise KubehoistError(f"crictl {args[0]} on {node.name}: {exc}") from exc
        if proc.returncode != 0:
            lines = proc.stderr.strip().splitlines() or [f"exit {proc.returncode}"]
            raise KubehoistError(f"crictl {args[0]} on {node.name}: {lines[-1]}")
        return proc.stdout

    return run


# --- the keeper ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sweep:
    """What one pass did."""

    listed: int  # containers crictl ps listed
    inspected: int  # containers inspected (new or changed state)
    copied: int  # log bytes appended to the archive
    states: int  # state files written
    gone: int  # containers that left CRI since the last pass


class _Tracked:
    """A container the keeper follows: where its log goes and how far it got."""

    def __init__(self, cid: str, archive: Path, source: Path | None) -> None:
        self.cid = cid
        self.archive = archive
        self.source = source  # the live log on the host; None: the container has none
        self.fh: IO[bytes] | None = None
        self.inode: int | None = None
        self.offset = 0
        self.ps_state = ""  # "" until inspected by this keeper
        self.record: ContainerRecord | None = None
        self.written: dict[str, Any] | None = None
        self.ended_sweeps = 0  # passes since its end was seen (its log is then complete)
        self.drained = False

    def checkpoint(self, archive_root: Path) -> dict[str, Any]:
        return {
            "archive": str(self.archive.relative_to(archive_root)),
            "source": str(self.source) if self.source else None,
            "inode": self.inode,
            "offset": self.offset,
            "drained": self.drained,
        }

    def close(self) -> None:
        if self.fh is not None:
            self.fh.close()
            self.fh = None


class LogKeeper:
    """Archives the logs and lifetimes of one node's containers (see the module)."""

    def __init__(self, node: str, node_root: Path, crictl: Crictl) -> None:
        self.node = node
        self.node_root = node_root
        self.archive_root = node_root / ARCHIVE_DIR
        self._crictl = crictl
        self._lock = threading.Lock()
        self._tracked: dict[str, _Tracked] = {}
        self._ignored: dict[str, str] = {}  # not the kubelet's: ID -> state when inspected
        self._saved: dict[str, Any] | None = None
        self._load_checkpoint()

    @classmethod
    def for_node(cls, spec: LabSpec, node: LabNode, crictl: Path) -> LogKeeper:
        """The keeper of a lab node, running `crictl` (the binary) inside it."""
        return cls(node.name, node.root(spec.root), node_crictl(spec, node, crictl))

    # --- the loop ---------------------------------------------------------------------------
    async def run(
        self, stop: asyncio.Event | None = None, interval: float = DEFAULT_INTERVAL_S
    ) -> None:
        """Sweep every `interval` seconds (in a worker thread) until `stop` is set or
        the task is cancelled. A failing pass (containerd not up yet) is logged when
        its message changes and retried; the descriptors stay open for the final
        `sweep_once(final=True)`."""
        last_error = ""
        while stop is None or not stop.is_set():
            started = time.monotonic()
            try:
                await asyncio.to_thread(self.sweep_once)
                if last_error:
                    log.info("log keeper %s: sweeping again", self.node)
                last_error = ""
            except (KubehoistError, OSError) as exc:
                if str(exc) != last_error:
                    log.warning("log keeper %s: %s", self.node, exc)
                last_error = str(exc)
            pause = max(0.05, interval - (time.monotonic() - started))
            if stop is None:
                await asyncio.sleep(pause)
            else:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=pause)

    def sweep_once(self, *, final: bool = False) -> Sweep:
        """One pass: list, inspect what changed, copy new log bytes, write states,
        finish containers that left CRI. `final` (the node is going away) also drains
        and closes every log and finishes every state still open as "Unknown"; if
        crictl fails then, every container counts as gone."""
        with self._lock:
            try:
                listed = parse_ps(self._crictl(["ps", "-a", "-o", "json"]))
            except KubehoistError:
                if not final:
                    raise
                listed = {}  # containerd is gone already: so are its containers
            changed = [
                cid
                for cid, state in listed.items()
                if state != CREATED
                and self._ignored.get(cid) != state
                and (cid not in self._tracked or self._tracked[cid].ps_state != state)
            ]
            records = self._inspect(changed)
            copied = states = 0
            for cid in changed:
                if cid not in records:
                    continue  # gone between ps and inspect
                record = records[cid]
                if record is None:
                    self._ignored[cid] = listed[cid]
                    continue
                if cid not in self._tracked:
                    states += self._adopt(record)
                tracked = self._tracked[cid]
                tracked.record, tracked.ps_state = record, listed[cid]
            for tracked in self._tracked.values():
                copied += self._drain(tracked)
                states += self._write_state(tracked)
            gone = [cid for cid in self._tracked if cid not in listed]
            for cid in gone if not final else list(self._tracked):
                tracked = self._tracked.pop(cid)
                copied += self._drain(tracked)
                tracked.close()
                states += finish_unknown(tracked.archive)
            self._ignored = {k: v for k, v in self._ignored.items() if k in listed}
            self._save_checkpoint()
            return Sweep(
                listed=len(listed),
                inspected=len(changed),
                copied=copied,
                states=states,
                gone=len(gone),
            )

    def close(self) -> None:
        """Close the held logs and save the checkpoint (states stay as they are: the
        containers may outlive this keeper, and the next one resumes them)."""
        with self._lock:
            for tracked in self._tracked.values():
                tracked.close()
            self._save_checkpoint()

    # --- inspecting ------------------------------------------------------------------------
    def _inspect(self, ids: Sequence[str]) -> dict[str, ContainerRecord | None]:
        """One crictl call for all; one each if that fails (one of them is gone)."""
        if not ids:
            return {}
        try:
            return parse_inspect(self._crictl(["inspect", "-q", "-o", "json", *ids]))
        except KubehoistError:
            if len(ids) == 1:
                return {}
        out: dict[str, ContainerRecord | None] = {}
        for cid in ids:
            with contextlib.suppress(KubehoistError):
                out.update(parse_inspect(self._crictl(["inspect", "-q", "-o", "json", cid])))
        return out

    def _adopt(self, record: ContainerRecord) -> int:
        """Start following a container: pick its archive file (its own, if an earlier
        keeper started one) and write its first state; 1 if it wrote it."""
        base = self.archive_root / record.pod_dir / record.container
        plain = base / f"{record.restart_count}.log"
        own = base / f"{record.restart_count}.{record.container_id[:12]}.log"
        source = self.node_root / record.log_path.lstrip("/") if record.log_path else None
        for candidate in (plain, own):
            doc = read_state(state_path(candidate))
            if doc is not None and doc.get("containerID") == record.container_id:
                tracked = _Tracked(record.container_id, candidate, source)
                # No checkpoint of it: assume its live log was not rotated meanwhile.
                with contextlib.suppress(OSError):
                    copied = candidate.stat().st_size
                    if source is not None and source.stat().st_size >= copied:
                        tracked.offset = copied
                        tracked.inode = source.stat().st_ino
                break
        else:
            taken = plain.exists() or state_path(plain).exists()
            tracked = _Tracked(record.container_id, own if taken else plain, source)
        tracked.archive.parent.mkdir(parents=True, exist_ok=True)
        tracked.archive.touch()
        self._tracked[record.container_id] = tracked
        tracked.record = record
        return self._write_state(tracked)

    def _write_state(self, tracked: _Tracked) -> int:
        if tracked.record is None or tracked.record.started_at is None:
            return 0
        doc = state_document(tracked.record, self.node)
        if doc == tracked.written:
            return 0
        write_json_atomic(state_path(tracked.archive), doc)
        tracked.written = doc
        return 1

    # --- copying -------------------------------------------------------------------------
    def _drain(self, tracked: _Tracked) -> int:
        """Append what the live log gained since the last pass; follow a rotation."""
        if tracked.drained:
            return 0
        copied = 0
        if tracked.source is not None and (tracked.fh is not None or self._open(tracked)):
            try:
                current: os.stat_result | None = tracked.source.stat()
            except FileNotFoundError:
                current = None  # deleted: what the descriptor holds is all there is
            copied += self._copy(tracked)
            if current is not None and current.st_ino != tracked.inode:
                # Rotated or replaced: the old file, drained above, gets no more bytes
                # once the new one exists (containerd reopens the path).
                tracked.close()
                tracked.inode, tracked.offset = None, 0
                if self._open(tracked):
                    copied += self._copy(tracked)
            elif current is not None and current.st_size < tracked.offset:
                assert tracked.fh is not None  # truncated in place: copy it anew
                tracked.fh.seek(0)
                tracked.offset = 0
                copied += self._copy(tracked)
        record = tracked.record
        if record is not None and record.finished_at is not None:
            tracked.ended_sweeps += 1
            if tracked.ended_sweeps >= 2:  # its writer has flushed: done with it
                tracked.close()
                tracked.drained = True
        return copied

    @staticmethod
    def _open(tracked: _Tracked) -> bool:
        assert tracked.source is not None
        try:
            fh = open(tracked.source, "rb")  # noqa: SIM115 -- held across passes
        except FileNotFoundError:
            return False
        inode = os.fstat(fh.fileno()).st_ino
        if tracked.inode is not None and inode != tracked.inode:
            tracked.offset = 0  # a checkpointed offset of another file
        tracked.inode = inode
        fh.seek(tracked.offset)
        tracked.fh = fh
        return True

    @staticmethod
    def _copy(tracked: _Tracked) -> int:
        """Append the descriptor's unread bytes to the archive (opened only then)."""
        assert tracked.fh is not None
        chunk = tracked.fh.read(_CHUNK)
        if not chunk:
            return 0
        copied = 0
        with open(tracked.archive, "ab") as out:
            while chunk:
                out.write(chunk)
                copied += len(chunk)
                chunk = tracked.fh.read(_CHUNK)
        tracked.offset += copied
        return copied

    # --- checkpoint --------------------------------------------------------------------
    @property
    def checkpoint_path(self) -> Path:
        return self.archive_root / CHECKPOINT_NAME

    def _load_checkpoint(self) -> None:
        doc = read_state(self.checkpoint_path) or {}
        containers = doc.get("containers")
        if not isinstance(containers, dict):
            return
        for cid, entry in containers.items():
            try:
                archive = self.archive_root / str(entry["archive"])
                source = Path(entry["source"]) if entry.get("source") else None
                tracked = _Tracked(cid, archive, source)
                tracked.inode = int(entry["inode"]) if entry.get("inode") is not None else None
                tracked.offset = int(entry.get("offset", 0))
                tracked.drained = bool(entry.get("drained"))
            except (KeyError, TypeError, ValueError):
                continue
            self._tracked[cid] = tracked
        self._saved = doc

    def _save_checkpoint(self) -> None:
        doc = {
            "node": self.node,
            "containers": {
                cid: t.checkpoint(self.archive_root) for cid, t in sorted(self._tracked.items())
            },
        }
        if doc == self._saved:
            return
        self.archive_root.mkdir(parents=True, exist_ok=True)
        write_json_atomic(self.checkpoint_path, doc)
        self._saved = doc
