"""`systemctl` on a lab node: the node's init stands for systemd, and this is how kubeadm
(and an operator) asks it to start, stop or restart the kubelet.

kubeadm drives the kubelet through systemd wherever it finds `systemctl` on PATH
(cmd/kubeadm/app/util/initsystem): `init` and `join` stop the kubelet in their
kubelet-start phase, write its configuration and run `systemctl daemon-reload` then
`systemctl restart kubelet`; `upgrade node` restarts it the same way; preflight asks
`systemctl status kubelet` (is the unit there: no "Loaded: not-found" / "could not be
found") and `systemctl is-enabled kubelet` (a warning otherwise). The lab's nodes have
no systemd, so each has this small shell program at `/usr/local/sbin/systemctl`: it
answers those questions from the state the node's init writes, and hands start, stop
and restart to the init as request files under `/run/kubehoist/systemctl` (the node's
own tmpfs), waiting, as `systemctl` waits for its job, until the init has done it.

Only `kubelet.service` can be started or stopped; `containerd.service` is reported as
running (the init keeps it running for the node's whole life).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Final

CONTROL_DIR: Final = "/run/kubehoist/systemctl"
"""Where, inside a node, the shim and the init meet (a tmpfs: empty at every boot)."""

UNITS: Final = ("kubelet", "containerd")
MANAGED: Final = "kubelet"
VERBS: Final = ("start", "stop", "restart")
ANSWER_TIMEOUT_S: Final = 120

SHIM: Final = f"""\
#!/bin/sh
# systemctl of a kubehoist lab node (written by kubehoist.lab.systemctl): the node's
# init stands for systemd. It manages kubelet.service (start, stop, restart);
# containerd.service always runs; daemon-reload has nothing to reload.
dir={CONTROL_DIR}
verb=""
unit=""
for arg in "$@"; do
  case "$arg" in
    -*) ;;
    *) if [ -z "$verb" ]; then verb=$arg; elif [ -z "$unit" ]; then unit=${{arg%.service}}; fi ;;
  esac
done
known() {{ case "$1" in {"|".join(UNITS)}) return 0 ;; *) return 1 ;; esac; }}
state() {{ cat "$dir/$1.state" 2>/dev/null || echo inactive; }}
case "$verb" in
  daemon-reload) exit 0 ;;
  is-enabled)
    if known "$unit"; then echo enabled; exit 0; fi
    echo "Failed to get unit file state for $unit.service: No such file or directory" >&2
    exit 1 ;;
  is-active)
    s=$(state "$unit"); echo "$s"
    [ "$s" = active ] ;;
  status)
    if ! known "$unit"; then echo "Unit $unit.service could not be found." >&2; exit 4; fi
    s=$(state "$unit")
    echo "* $unit.service - $unit (the kubehoist lab node's init)"
    echo "     Loaded: loaded (/usr/lib/systemd/system/$unit.service; enabled)"
    echo "     Active: $s"
    [ "$s" = active ] || exit 3 ;;
  start|stop|restart)
    if [ "$unit" != {MANAGED} ]; then
      echo "systemctl: the lab node's init manages only {MANAGED}.service, not $unit" >&2
      exit 1
    fi
    req="$dir/req.$$"
    echo "$verb $unit" > "$req.tmp" && mv "$req.tmp" "$req" || exit 1
    i=0
    while [ ! -e "$req.done" ]; do
      i=$((i + 1))
      if [ "$i" -gt {ANSWER_TIMEOUT_S * 10} ]; then
        rm -f "$req"
        echo "systemctl: the node's init did not answer in {ANSWER_TIMEOUT_S}s" >&2
        exit 1
      fi
      sleep 0.1
    done
    code=$(cat "$req.done")
    rm -f "$req.done"
    exit "$code" ;;
  *)
    echo "systemctl: '$verb' is not supported on a kubehoist lab node" >&2
    exit 1 ;;
esac
"""


@dataclass(frozen=True)
class Request:
    """One `systemctl start|stop|restart UNIT` waiting for the init."""

    path: Path
    verb: str
    unit: str

    def answer(self, code: int) -> None:
        """Tell the waiting shim its exit code (and drop the request)."""
        done = self.path.with_name(self.path.name + ".done")
        tmp = self.path.with_name(self.path.name + ".done.tmp")
        tmp.write_text(f"{code}\n")
        tmp.replace(done)
        self.path.unlink(missing_ok=True)


def pending(control_dir: Path) -> list[Request]:
    """The requests waiting in `control_dir`, oldest first; malformed ones are answered
    with exit code 1 at once."""
    out: list[Request] = []
    with contextlib.suppress(FileNotFoundError):
        paths = sorted(control_dir.glob("req.*"), key=lambda p: p.stat().st_mtime_ns)
        for path in paths:
            if path.name.endswith((".tmp", ".done")):
                continue
            try:
                words = path.read_text().split()
            except FileNotFoundError:
                continue
            verb, unit = [*words, "", ""][:2]
            req = Request(path, verb, unit)
            if req.verb not in VERBS or req.unit != MANAGED:
                req.answer(1)
                continue
            out.append(req)
    return out


def write_state(control_dir: Path, unit: str, state: str) -> None:
    """Record a unit's ActiveState (`active`, `activating`, `inactive`) for the shim."""
    path = control_dir / f"{unit}.state"
    try:
        if path.read_text().strip() == state:
            return
    except FileNotFoundError:
        pass
    tmp = control_dir / f"{unit}.state.tmp"
    tmp.write_text(f"{state}\n")
    tmp.replace(path)


def install(control_dir: Path, shim_path: Path) -> None:
    """Make the control directory and write the shim (inside the node, at boot)."""
    control_dir.mkdir(parents=True, exist_ok=True)
    shim_path.write_text(SHIM)
    shim_path.chmod(0o755)
