"""The guard's configuration (`GuardConfig`) and the small helpers its runner
(guard/loop.py) and the CLI share: where the node records a fallback, the component's
pod selectors, the JSON log line, the gist of a reason.
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubehoist.components import Component
from kubehoist.constants import MANAGED_BY_LABEL, MANAGED_BY_VALUE, NAME_LABEL
from kubehoist.guard.decide import Policy
from kubehoist.kube.objects import KUBEADM_COMPONENT_LABEL
from kubehoist.nodefiles.parking import LocalNodeFiles


@dataclass(frozen=True, kw_only=True)
class GuardConfig:
    component: Component
    node: str
    manifests_dir: Path
    host_root: Path | None = None
    """The node's `/` (read-only), to run its crictl before a fallback; None: not mounted."""
    filename: str = ""
    """Default `<component>.yaml`."""
    namespace: str = "kube-system"
    deployment: str = ""
    """Default the component's name."""
    interval_s: float = 1.0
    guard_lease_duration_s: int = 15
    guard_retry_s: float = 2.0
    policy: Policy = field(default_factory=Policy)

    @property
    def manifest_name(self) -> str:
        return self.filename or f"{self.component.name}.yaml"

    @property
    def deployment_name(self) -> str:
        return self.deployment or self.component.name


_NUMBER = re.compile(r"\d+(\.\d+)?")


def gist(reason: str) -> str:
    """A reason without its figures: a Wait is logged when its gist changes, not every
    round while a count of seconds goes up."""
    return _NUMBER.sub("#", reason)


def json_line(record: dict[str, Any]) -> None:
    print(json.dumps(record, sort_keys=True, default=str), file=sys.stdout, flush=True)


def pod_selectors(component: str) -> tuple[dict[str, Any], ...]:
    """The component's pods: its static pods (kubeadm's label) and its Deployment's."""
    return (
        {KUBEADM_COMPONENT_LABEL: component},
        {MANAGED_BY_LABEL: MANAGED_BY_VALUE, NAME_LABEL: component},
    )


def marker_path(files: LocalNodeFiles, filename: str) -> Path:
    """The node's record that the manifest in place is a guard's fallback."""
    return files.manifests_dir.parent / "kubehoist" / "guard" / f"{filename}.fallback.json"
