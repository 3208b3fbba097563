"""The POSIX shell scripts the helper pods run on a node (busybox or coreutils): park,
unpark and probe one manifest, with the crictl steps that watch a parked pod stop and
clear a restored pod's stopped sandboxes; and the reading of a helper's result.

They take the same steps in the same order as `parking.LocalNodeFiles` (see the
`parking` module), on the node's `/etc/kubernetes` as the helper pod mounts it
(`HOST_MOUNT`) and with the node's `/` at `HOST_ROOT`.
"""

from __future__ import annotations

import posixpath
import shlex

from kubehoist.errors import KubehoistError
from kubehoist.nodefiles.parking import (
    CRICTL_DIRS,
    KUBELET_CONFIG,
    MANIFESTS_DIR,
    PARK_DIR,
    RECORD_SUFFIX,
    ParkResult,
    clear_argv,
    sandbox_argv,
    static_pod_name,
)

RESULT = "kubehoist-result:"
"""The last line a helper script prints once its work is done (helperpod.RESULT_PREFIX)."""

HOST_MOUNT = "/host/etc/kubernetes"


def host_path(path: str) -> str:
    """A node path under /etc/kubernetes as the helper pod sees it."""
    assert path.startswith("/etc/kubernetes")
    return HOST_MOUNT + path[len("/etc/kubernetes") :]


def park_script(filename: str, node: str = "", stop_wait_s: float = 0.0) -> str:
    """POSIX shell (busybox or coreutils) that parks one manifest; the termination
    message says `<state> <sha256> <stopped>`. With `node` and `stop_wait_s`, after the
    park it watches the node's runtime (its crictl under HOST_ROOT) for up to
    `stop_wait_s` until the static pod's sandboxes have stopped (see parking.STOPPED)."""
    src = host_path(posixpath.join(MANIFESTS_DIR, filename))
    dst = host_path(posixpath.join(PARK_DIR, filename))
    q = shlex.quote
    watch = bool(node) and stop_wait_s > 0
    stop = stop_script(static_pod_name(filename, node), stop_wait_s) if watch else ""
    stopped = "$(watch_stopped)" if watch else "-"
    return f"""set -eu
{stop}
src={q(src)}; dst={q(dst)}; rec={q(dst + RECORD_SUFFIX)}
msg=/dev/termination-log
if [ ! -f "$src" ]; then
  if [ -f "$dst" ]; then
    echo "already-parked $(sha256sum "$dst" | cut -d' ' -f1)" > $msg; exit 0
  fi
  echo "missing {posixpath.join(MANIFESTS_DIR, filename)}" > $msg; exit 3
fi
mkdir -p "$(dirname "$dst")"
sum=$(sha256sum "$src" | cut -d' ' -f1)
size=$(wc -c < "$src" | tr -d ' ')
when=$(date -u +%Y-%m-%dT%H:%M:%SZ)
printf '{{"by": "kubehoist", "from": "%s", "parkedAt": "%s", "sha256": "%s", "size": %s}}' \\
  {q(posixpath.join(MANIFESTS_DIR, filename))} "$when" "$sum" "$size" > "$rec.tmp"
mv "$rec.tmp" "$rec"
cp -p "$src" "$dst.tmp"
mv "$dst.tmp" "$dst"
[ "$(sha256sum "$dst" | cut -d' ' -f1)" = "$sum" ] || {{ echo "copy-differs" > $msg; exit 4; }}
rm -f "$src"
stopped={stopped}
echo "parked $sum $stopped" > $msg
echo "{RESULT} parked $sum $stopped"
"""


def stop_script(pod: str, wait_s: float) -> str:
    """POSIX shell: `watch_stopped` prints `stopped` once the node's crictl lists
    sandboxes of `pod` and none ready (see parking.STOPPED), `-` when it cannot tell or
    `wait_s` passed."""
    q = shlex.quote
    every = " ".join(q(a) for a in sandbox_argv("", pod, ready=False)[1:])
    ready = " ".join(q(a) for a in sandbox_argv("", pod, ready=True)[1:])
    rounds = max(1, round(wait_s / 0.05))
    return f"""{crictl_prelude()}
watch_stopped() {{
  find_crictl
  if [ -z "$c" ]; then echo -; return 0; fi
  all=$(node_crictl {every} 2>/dev/null) || {{ echo -; return 0; }}
  if [ -z "$all" ]; then echo -; return 0; fi
  i=0
  while [ $i -lt {rounds} ]; do
    up=$(node_crictl {ready} 2>/dev/null) || {{ echo -; return 0; }}
    if [ -z "$up" ]; then echo stopped; return 0; fi
    sleep 0.05; i=$((i+1))
  done
  echo -
}}
"""


def crictl_prelude() -> str:
    """POSIX shell: `find_crictl` sets `c` (the node's crictl, empty when it has none)
    and `ep` (the kubelet's runtime endpoint); `node_crictl ARGS` runs it chrooted into
    the node's `/` (HOST_ROOT)."""
    dirs = " ".join(CRICTL_DIRS)
    return f"""find_crictl() {{
  c=""; ep=""
  for d in {dirs}; do
    if [ -x "{HOST_ROOT}$d/crictl" ]; then c="$d/crictl"; break; fi
  done
  if [ -f "{HOST_ROOT}{KUBELET_CONFIG}" ]; then
    cfg="{HOST_ROOT}{KUBELET_CONFIG}"
    ep=$(sed -n 's/^containerRuntimeEndpoint:[[:space:]]*//p' "$cfg" | tr -d '\\042\\047')
    ep=${{ep%%[[:space:]]*}}
  fi
}}
node_crictl() {{
  if [ -n "$ep" ]; then chroot {HOST_ROOT} "$c" -r "$ep" "$@"
  else chroot {HOST_ROOT} "$c" "$@"; fi
}}"""


HOST_ROOT = "/host-root"
"""Where an unpark helper sees the node's `/` (to run the node's crictl, chrooted)."""


def clear_script(pod: str) -> str:
    """POSIX shell: `clear_sandboxes` prints what parking.clear_stopped_sandboxes returns."""
    q = shlex.quote
    listing = " ".join(q(a) for a in clear_argv("", pod)[1:])
    return f"""{crictl_prelude()}
clear_sandboxes() {{
  find_crictl
  if [ -z "$c" ]; then echo no-crictl; return 0; fi
  ids=$(node_crictl {listing} 2>/dev/null) || {{ echo crictl-failed; return 0; }}
  n=0
  for id in $ids; do
    if node_crictl rmp "$id" >/dev/null 2>&1; then n=$((n+1)); fi
  done
  echo "cleared-$n"
}}
"""


def unpark_script(filename: str, node: str = "") -> str:
    src = host_path(posixpath.join(PARK_DIR, filename))
    dst = host_path(posixpath.join(MANIFESTS_DIR, filename))
    tmp = host_path(posixpath.join(MANIFESTS_DIR, f".{filename}.kubehoist-tmp"))
    q = shlex.quote
    clear = clear_script(static_pod_name(filename, node)) if node else ""
    cleared = "$(clear_sandboxes)" if node else "-"
    return f"""set -eu
{clear}
src={q(src)}; dst={q(dst)}; rec={q(src + RECORD_SUFFIX)}; tmp={q(tmp)}
msg=/dev/termination-log
if [ ! -f "$src" ]; then
  if [ -f "$dst" ]; then
    echo "already-in-place $(sha256sum "$dst" | cut -d' ' -f1)" > $msg; exit 0
  fi
  echo "missing {posixpath.join(PARK_DIR, filename)}" > $msg; exit 3
fi
sum=$(sha256sum "$src" | cut -d' ' -f1)
if [ -f "$rec" ] && ! grep -q "\\"sha256\\": \\"$sum\\"" "$rec"; then
  echo "record-differs $sum" > $msg; exit 4
fi
cleared={cleared}
cp -p "$src" "$tmp"
mv "$tmp" "$dst"
[ "$(sha256sum "$dst" | cut -d' ' -f1)" = "$sum" ] || {{ echo "copy-differs" > $msg; exit 4; }}
rm -f "$src" "$rec"
echo "unparked $sum $cleared" > $msg
echo "{RESULT} unparked $sum $cleared"
"""


def probe_script(filename: str) -> str:
    dst = host_path(posixpath.join(PARK_DIR, filename))
    q = shlex.quote
    return f"""set -eu
dst={q(dst)}
if [ -f "$dst" ]; then echo "parked $(sha256sum "$dst" | cut -d' ' -f1)" > /dev/termination-log
else echo "none -" > /dev/termination-log; fi
"""


EXIT_MEANINGS = {3: "the file to move is missing", 4: "the copy differs from its source"}


def parse_result(node: str, filename: str, message: str, exit_code: int = 0) -> ParkResult:
    """A helper's outcome: its termination message `<state> <sha256>` where the kubelet
    reports one, else its exit code (0: done; the node-side script checked the sha256)."""
    words = message.split()
    states = ("parked", "unparked", "already-parked", "already-in-place")
    if len(words) in (2, 3) and words[0] in states and exit_code == 0:
        third = words[2] if len(words) == 3 and words[2] != "-" else ""
        if words[0] == "parked":
            return ParkResult(
                node=node, filename=filename, sha256=words[1], state=words[0],
                stopped=third == "stopped",
            )  # fmt: skip
        return ParkResult(
            node=node, filename=filename, sha256=words[1], state=words[0], cleared=third
        )
    if exit_code == 0 and not words:
        return ParkResult(node=node, filename=filename, sha256="", state="done")
    why = message.strip() or EXIT_MEANINGS.get(exit_code, "no message")
    raise KubehoistError(f"node {node}: helper for {filename} failed (exit {exit_code}): {why}")
