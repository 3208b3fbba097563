"""The pivot's progress, recorded on the cluster so that any later run — after Ctrl-C,
a crash or a lost connection, from any machine — resumes or rolls back from it.

One ConfigMap per component, `kube-system/kubehoist-pivot-<component>`, labelled as
kubehoist's, written after every phase with the resourceVersion it was read at (two
runs at once cannot both advance it).
"""

from __future__ import annotations

import datetime as dt
import json
import time
from dataclasses import dataclass, field, replace
from typing import Any

from lightkube import Client
from lightkube.core.exceptions import ApiError
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import ConfigMap

from kubehoist.constants import object_labels
from kubehoist.errors import KubehoistError
from kubehoist.kube.client import absent_ok, get_or_none
from kubehoist.kube.errors import maybe_done, status_code

SAVE_ATTEMPTS = 5
"""Writes of the record whose answer was lost, read back and sent again (see `save`)."""

STATUSES = ("in-progress", "pivoted", "upgrading", "rolling-back", "rolled-back")
"""`upgrading`: `kubehoist upgrade prepare` put the static pods back for kubeadm's
upgrade; `upgrade complete` pivots onto kubeadm's new manifests (pivot/upgrade.py)."""


def configmap_name(component: str) -> str:
    return f"kubehoist-pivot-{component}"


@dataclass(frozen=True, kw_only=True)
class PivotState:
    component: str
    status: str = "in-progress"
    done: tuple[str, ...] = ()
    parked: dict[str, str] = field(default_factory=dict)  # node -> sha256 of the manifest
    options: dict[str, Any] = field(default_factory=dict)
    """What pivot was asked (its render flags), so that `upgrade complete` renders
    kubeadm's new manifest the same way."""
    updated: str = ""
    resource_version: str | None = None

    def with_done(self, phase: str) -> PivotState:
        return self if phase in self.done else replace(self, done=(*self.done, phase))

    def to_data(self) -> dict[str, str]:
        body = {
            "component": self.component,
            "status": self.status,
            "done": list(self.done),
            "parked": dict(sorted(self.parked.items())),
            "options": dict(sorted(self.options.items())),
            "updated": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
        return {"state.json": json.dumps(body, indent=2, sort_keys=True) + "\n"}

    @classmethod
    def from_configmap(cls, cm: ConfigMap) -> PivotState:
        name = cm.metadata.name if cm.metadata else "?"
        try:
            body: Any = json.loads((cm.data or {})["state.json"])
            return cls(
                component=str(body["component"]),
                status=str(body["status"]),
                done=tuple(str(p) for p in body.get("done", [])),
                parked={str(k): str(v) for k, v in body.get("parked", {}).items()},
                options=dict(body.get("options", {})),
                updated=str(body.get("updated", "")),
                resource_version=cm.metadata.resourceVersion if cm.metadata else None,
            )
        except (KeyError, ValueError, TypeError) as exc:
            raise KubehoistError(
                f"ConfigMap kube-system/{name}: data.state.json unreadable ({exc}); "
                "inspect it, or delete it to start over"
            ) from None


def load(client: Client, component: str) -> PivotState | None:
    cm = get_or_none(client, ConfigMap, configmap_name(component), namespace="kube-system")
    return None if cm is None else PivotState.from_configmap(cm)


def save(client: Client, state: PivotState) -> PivotState:
    """Write the record: a create, or an update from the resourceVersion it was read at.

    A write whose answer was lost (the API server went away after the request left,
    or failed while handling it: `kube.errors.maybe_done`) may or may not have been
    done, so it is not sent again blindly: the record is read back; if it already says
    what this write says, the write was done; if it is still at the resourceVersion
    this run holds, it was not, and is sent again; anything else is another writer. A
    write that never left (the connection was refused until the client's retries ran
    out) is not tried again here: the run fails within its --timeout."""
    for attempt in range(SAVE_ATTEMPTS):
        try:
            return _write(client, state)
        except (ApiError, KubehoistError) as exc:
            if not (isinstance(exc, KubehoistError) and maybe_done(exc)):
                raise  # refused, or never sent (the client retried that already)
            if attempt == SAVE_ATTEMPTS - 1:
                raise
            current = get_or_none(
                client, ConfigMap, configmap_name(state.component), namespace="kube-system"
            )
            if current is not None and _same(current, state):
                assert current.metadata is not None
                return replace(state, resource_version=current.metadata.resourceVersion)
            held = current.metadata.resourceVersion if current and current.metadata else None
            if held != state.resource_version:
                raise _changed(state.component) from None
            time.sleep(0.5 * 2**attempt)
    raise AssertionError("unreachable")  # pragma: no cover


def _same(cm: ConfigMap, state: PivotState) -> bool:
    """Whether the record says what `state` says (its time of writing aside)."""
    try:
        theirs = PivotState.from_configmap(cm)
    except KubehoistError:
        return False
    return (theirs.status, theirs.done, theirs.parked, theirs.options) == (
        state.status,
        state.done,
        state.parked,
        state.options,
    )


def _changed(component: str) -> KubehoistError:
    return KubehoistError(
        f"ConfigMap kube-system/{configmap_name(component)} changed under this run "
        "(another kubehoist pivot or rollback is running?)"
    )


def _write(client: Client, state: PivotState) -> PivotState:
    name = configmap_name(state.component)
    meta = ObjectMeta(
        name=name,
        namespace="kube-system",
        labels=object_labels(state.component),
        resourceVersion=state.resource_version,
    )
    cm = ConfigMap(metadata=meta, data=state.to_data())
    try:
        out = client.replace(cm) if state.resource_version else client.create(cm)
    except (ApiError, KubehoistError) as exc:
        if status_code(exc) == 409:
            raise _changed(state.component) from None
        raise
    assert out.metadata is not None
    return replace(state, resource_version=out.metadata.resourceVersion)


def delete(client: Client, component: str) -> None:
    with absent_ok():
        client.delete(ConfigMap, configmap_name(component), namespace="kube-system")
