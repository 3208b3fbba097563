"""Node-pinned helper pods: run a short POSIX shell script on control-plane nodes with
the node's `/etc/kubernetes` mounted, and read back each one's termination message.

A helper pod is bound with `spec.nodeName`, tolerates every taint and needs no
scheduler and no controller manager: the node's kubelet alone runs it. That is what
lets pivot, rollback and guard reach a node's manifests when no controller manager is
running at all.
"""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from lightkube import Client
from lightkube.core.exceptions import ApiError
from lightkube.models.core_v1 import (
    Container,
    HostPathVolumeSource,
    PodSpec,
    SecretVolumeSource,
    SecurityContext,
    Toleration,
    Volume,
    VolumeMount,
)
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import Pod

from kubehoist.constants import object_labels
from kubehoist.errors import KubehoistError
from kubehoist.kube import retry
from kubehoist.kube.errors import maybe_done, status_code, transient
from kubehoist.nodefiles.parking import ParkResult
from kubehoist.nodefiles.scripts import (
    HOST_MOUNT,
    HOST_ROOT,
    RESULT,
    park_script,
    parse_result,
    probe_script,
    unpark_script,
)

DEFAULT_IMAGE = "busybox:1.36"
ROLE_LABEL = "kubehoist.io/role"
RUN_LABEL = "kubehoist.io/helper-run"


def selector(component: str) -> dict[str, Any]:
    """Labels that select every helper pod of `component` (of any run)."""
    labels: dict[str, Any] = dict(object_labels(component))
    labels["app.kubernetes.io/name"] = f"{component}-helper"
    labels[ROLE_LABEL] = "node-helper"
    return labels


def helper_pod(
    *,
    node: str,
    script: str | Sequence[str],
    image: str,
    component: str,
    run: str,
    namespace: str,
    secret: str | None = None,
    secret_mount: str = "/kubehoist-input",
    host_root: bool = False,
) -> Pod:
    """`secret`: a Secret mounted read-only at `secret_mount` (files to write on the node).
    `host_root`: the node's `/` at `scripts.HOST_ROOT` (to run the node's crictl)."""
    labels = object_labels(component, extra={ROLE_LABEL: "node-helper", RUN_LABEL: run})
    # Helper pods must never be selected as the component's own pods.
    labels["app.kubernetes.io/name"] = f"{component}-helper"
    return Pod(
        metadata=ObjectMeta(
            name=f"kubehoist-{run}-{node}"[:63].rstrip("-"), namespace=namespace, labels=labels
        ),
        spec=PodSpec(
            nodeName=node,
            restartPolicy="Never",
            tolerations=[Toleration(operator="Exists")],
            priorityClassName="system-node-critical",
            automountServiceAccountToken=False,
            terminationGracePeriodSeconds=5,
            containers=[
                Container(
                    name="files",
                    image=image,
                    command=["/bin/sh", "-c", script] if isinstance(script, str) else [*script],
                    terminationMessagePolicy="File",
                    securityContext=SecurityContext(runAsUser=0),
                    volumeMounts=[
                        VolumeMount(name="etc-kubernetes", mountPath=HOST_MOUNT),
                        *(
                            [VolumeMount(name="host-root", mountPath=HOST_ROOT, readOnly=True)]
                            if host_root
                            else []
                        ),
                        *(
                            [VolumeMount(name="input", mountPath=secret_mount, readOnly=True)]
                            if secret
                            else []
                        ),
                    ],
                )
            ],
            volumes=[
                Volume(
                    name="etc-kubernetes",
                    hostPath=HostPathVolumeSource(path="/etc/kubernetes", type="Directory"),
                ),
                *(
                    [Volume(name="host-root", hostPath=HostPathVolumeSource(path="/"))]
                    if host_root
                    else []
                ),
                *(
                    [
                        Volume(
                            name="input",
                            secret=SecretVolumeSource(secretName=secret, defaultMode=0o400),
                        )
                    ]
                    if secret
                    else []
                ),
            ],
        ),
    )


@dataclass(frozen=True, kw_only=True)
class HelperOutcome:
    node: str
    exit_code: int
    message: str


CLEANUP_S = 10.0
"""How long the deletion of a run's helper pods is retried through an API outage."""

START_FAILURES = range(126, 129)
"""Exit codes of a container that could not start (the script never ran): retried."""


def run_scripts(
    client: Client,
    scripts: Mapping[str, str | Sequence[str]],
    *,
    image: str,
    component: str,
    namespace: str = "kube-system",
    timeout: float = 120,
    attempts: int = 3,
    secret: str | None = None,
    secret_mount: str = "/kubehoist-input",
    host_root: bool = False,
    follow_logs: bool = False,
) -> dict[str, HelperOutcome]:
    """Run `scripts[node]` on each node at once and wait for all: a shell script, or a
    command (argv) of the image. A helper whose container could not start is run again
    (the scripts are idempotent). `follow_logs`: take a script's result from its log
    stream when it prints one (`RESULT_PREFIX`), before the kubelet reports its exit."""
    out: dict[str, HelperOutcome] = {}
    todo = dict(scripts)
    # One deadline for the whole run (creating the pods, waiting for them, running a
    # helper again): an API server away for longer than `timeout` fails the run within
    # it, however the outage falls across those steps.
    deadline = time.monotonic() + timeout
    for attempt in range(1, attempts + 1):
        got = _run_once(
            client,
            todo,
            image=image,
            component=component,
            namespace=namespace,
            deadline=deadline,
            timeout=timeout,
            secret=secret,
            secret_mount=secret_mount,
            host_root=host_root,
            follow_logs=follow_logs,
        )
        out.update(got)
        todo = {n: s for n, s in todo.items() if got[n].exit_code in START_FAILURES}
        if not todo or attempt == attempts:
            break
        time.sleep(0.5 * attempt)
    return out


def _run_once(
    client: Client,
    scripts: Mapping[str, str | Sequence[str]],
    *,
    image: str,
    component: str,
    namespace: str = "kube-system",
    deadline: float,
    timeout: float = 120,
    secret: str | None = None,
    secret_mount: str = "/kubehoist-input",
    host_root: bool = False,
    follow_logs: bool = False,
) -> dict[str, HelperOutcome]:
    """Run `scripts[node]` on each node at once; wait for all (until `deadline`, the
    monotonic clock; `timeout` names it in errors); delete the pods."""
    run = uuid.uuid4().hex[:6]
    names: dict[str, str] = {}
    try:
        for node, script in scripts.items():
            pod = helper_pod(
                node=node,
                script=script,
                image=image,
                component=component,
                run=run,
                namespace=namespace,
                secret=secret,
                secret_mount=secret_mount,
                host_root=host_root,
            )
            names[node] = _create(client, pod, deadline=deadline)
        return _wait(
            client,
            names,
            namespace=namespace,
            deadline=deadline,
            timeout=timeout,
            image=image,
            follow_logs=follow_logs,
        )
    finally:
        # Best effort, and short: a failure here must not hold up the rollback that
        # follows a failed retire (a finished helper pod left behind does nothing).
        with retry.within(CLEANUP_S):
            for name in names.values():
                with contextlib.suppress(ApiError, KubehoistError):
                    client.delete(Pod, name, namespace=namespace, grace_period=0)


def _create(client: Client, pod: Pod, *, deadline: float) -> str:
    """Create a helper pod; through an API server that goes away, until `deadline`. A
    create whose answer was lost is sent again: its name is this run's own, so "already
    exists" means the lost one was done."""
    assert pod.metadata is not None and pod.metadata.name is not None
    name = pod.metadata.name
    while True:
        try:
            with retry.within(deadline - time.monotonic()):
                client.create(pod)
            return name
        except (ApiError, KubehoistError) as exc:
            if status_code(exc) == 409:
                return name
            if not (transient(exc) or maybe_done(exc)) or time.monotonic() >= deadline:
                raise
        time.sleep(min(0.5, max(0.0, deadline - time.monotonic())))


RESULT_PREFIX = RESULT + " "
"""A script's last line on stdout, `RESULT_PREFIX` + what it also wrote to its
termination message, once its work is done and checked: read from the container's log
stream, the result arrives as it is printed. The termination message reaches the API
server only after the kubelet noticed the exit (its PLEG relists every second) and
posted the status — about a second later, which a hand-over would spend with no leader."""


class _LogResults:
    """Follows each helper's log for its `RESULT_PREFIX` line (threads; best effort: a
    log that cannot be read leaves the termination message to tell)."""

    def __init__(self, client: Client, names: Mapping[str, str], namespace: str) -> None:
        self.found: dict[str, str] = {}
        self.wake = threading.Event()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        for node, name in names.items():
            threading.Thread(
                target=self._follow, args=(client, node, name, namespace), daemon=True
            ).start()

    def _follow(self, client: Client, node: str, name: str, namespace: str) -> None:
        while not self._stop.is_set():
            try:
                for line in client.log(name, namespace=namespace, follow=True, newlines=False):
                    if line.startswith(RESULT_PREFIX):
                        with self._lock:
                            self.found[node] = line[len(RESULT_PREFIX) :].strip()
                        self.wake.set()
                        return
                return  # the stream ended (the container exited or the pod went away)
            except Exception:  # not started yet, or the log is not reachable
                if self._stop.wait(0.1):
                    return

    def take(self) -> dict[str, str]:
        with self._lock:
            return dict(self.found)

    def close(self) -> None:
        self._stop.set()


def _wait(
    client: Client,
    names: Mapping[str, str],
    *,
    namespace: str,
    deadline: float,
    timeout: float,
    image: str,
    follow_logs: bool = False,
) -> dict[str, HelperOutcome]:
    done: dict[str, HelperOutcome] = {}
    logs = _LogResults(client, names, namespace) if follow_logs else None
    last = ""
    try:
        while len(done) < len(names):
            for node, message in (logs.take() if logs else {}).items():
                done.setdefault(node, HelperOutcome(node=node, exit_code=0, message=message))
            try:
                with retry.within(deadline - time.monotonic()):
                    for node, name in names.items():
                        if node in done:
                            continue
                        pod = client.get(Pod, name, namespace=namespace)
                        outcome = _outcome(node, pod, image=image)
                        if outcome is not None:
                            done[node] = outcome
            except KubehoistError as exc:
                if not transient(exc):
                    raise
                last = f"; last: {exc.message}"  # the API server is away: the helpers run on
            if len(done) < len(names):
                if time.monotonic() > deadline:
                    waiting = sorted(set(names) - set(done))
                    raise KubehoistError(
                        f"helper pods on {', '.join(waiting)} did not finish in {timeout:.0f}s "
                        "(is the kubelet of those nodes running, and the helper image "
                        f"pullable?{last})"
                    )
                if logs is not None:
                    logs.wake.wait(0.1)
                    logs.wake.clear()
                else:
                    time.sleep(0.1)
    finally:
        if logs is not None:
            logs.close()
    return done


def _outcome(node: str, pod: Pod, *, image: str) -> HelperOutcome | None:
    status = pod.status
    for cs in (status.containerStatuses if status else None) or []:
        state = cs.state
        if state is None:
            continue
        if state.terminated is not None:
            return HelperOutcome(
                node=node,
                exit_code=state.terminated.exitCode,
                message=(state.terminated.message or "").strip(),
            )
        if state.waiting is not None and state.waiting.reason in (
            "ErrImagePull",
            "ImagePullBackOff",
            "InvalidImageName",
        ):
            raise KubehoistError(
                f"node {node}: helper image {image} cannot be pulled "
                f"({state.waiting.reason}); pass --helper-image"
            )
    return None


@dataclass(frozen=True)
class PodNodeFiles:
    """`parking.NodeFiles` through helper pods; the `_all` forms do every node at once
    (one helper pod per node, in parallel)."""

    client: Client
    image: str
    component: str
    stop_wait_s: float = 0.0  # after a park: how long to watch the runtime (parking.STOPPED)
    timeout: float = 120.0  # how long the helpers may take (the verb's --timeout)

    def _run(
        self,
        nodes: Sequence[str],
        script: Callable[[str, str], str],
        filename: str,
        *,
        host_root: bool = False,
    ) -> dict[str, ParkResult]:
        outs = run_scripts(
            self.client,
            {n: script(filename, n) for n in nodes},
            image=self.image,
            component=self.component,
            host_root=host_root,
            follow_logs=True,
            timeout=self.timeout,
        )
        return {n: parse_result(n, filename, o.message, o.exit_code) for n, o in outs.items()}

    def park(self, node: str, filename: str) -> ParkResult:
        return self.park_all([node], filename)[node]

    def unpark(self, node: str, filename: str) -> ParkResult:
        return self.unpark_all([node], filename)[node]

    def park_all(self, nodes: Sequence[str], filename: str) -> dict[str, ParkResult]:
        if self.stop_wait_s <= 0:
            return self._run(nodes, lambda f, _n: park_script(f), filename)
        # The node's `/` too: its crictl tells when the parked pod has stopped.
        return self._run(
            nodes,
            lambda f, n: park_script(f, n, self.stop_wait_s),
            filename,
            host_root=True,
        )

    def unpark_all(self, nodes: Sequence[str], filename: str) -> dict[str, ParkResult]:
        # The node's `/` too: its crictl clears the kubelet's memory of the pod first.
        return self._run(nodes, unpark_script, filename, host_root=True)

    def parked(self, node: str, filename: str) -> str | None:
        out = run_scripts(
            self.client,
            {node: probe_script(filename)},
            image=self.image,
            component=self.component,
        )[node]
        words = out.message.split()
        if len(words) == 2 and words[0] == "parked":
            return words[1]
        return None
