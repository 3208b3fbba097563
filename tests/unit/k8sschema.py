"""Checks rendered objects against the pinned Kubernetes schema and Pod Security.

`validate` round-trips an object through lightkube's typed models (Kubernetes v1.36):
a wrong type or a missing required field raises while decoding, and a field the schema
does not know is dropped by decoding, so the round trip no longer equals the input.
`restricted_violations` lists what breaks the "restricted" Pod Security Standard.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec
from lightkube import codecs


class SchemaError(AssertionError):
    pass


def validate(obj: Mapping[str, Any]) -> None:
    """SchemaError unless `obj` is exactly representable in the v1.36 schema."""
    try:
        typed = codecs.from_dict(dict(obj))
    except (msgspec.ValidationError, Exception) as exc:
        raise SchemaError(f"{obj.get('kind')}: does not decode: {exc}") from exc
    back = typed.to_dict()
    if back != obj:
        raise SchemaError(f"{obj.get('kind')}: fields lost in the round trip: {_diff(obj, back)}")


def _diff(a: Any, b: Any, path: str = "") -> str:
    if isinstance(a, dict) and isinstance(b, dict):
        for key in a:
            if key not in b:
                return f"{path}.{key}"
            found = _diff(a[key], b[key], f"{path}.{key}")
            if found:
                return found
        return ""
    if isinstance(a, list) and isinstance(b, list):
        for i, (x, y) in enumerate(zip(a, b, strict=False)):
            found = _diff(x, y, f"{path}[{i}]")
            if found:
                return found
        return "" if len(a) == len(b) else f"{path} (length)"
    return "" if a == b else f"{path}: {a!r} != {b!r}"


_RESTRICTED_VOLUMES = {
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
}


def restricted_violations(spec: Mapping[str, Any]) -> list[str]:
    """Breaches of the restricted Pod Security Standard (baseline checks included)."""
    out: list[str] = []
    pod_sc = spec.get("securityContext") or {}
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(key):
            out.append(key)
    for volume in spec.get("volumes") or []:
        kinds = set(volume) - {"name"}
        if not kinds <= _RESTRICTED_VOLUMES:
            out.append(f"volume {volume['name']}: {sorted(kinds)}")
    pod_seccomp = (pod_sc.get("seccompProfile") or {}).get("type")
    for c in [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]:
        sc = c.get("securityContext") or {}
        name = c.get("name")
        if sc.get("privileged"):
            out.append(f"{name}: privileged")
        if sc.get("allowPrivilegeEscalation") is not False:
            out.append(f"{name}: allowPrivilegeEscalation must be false")
        if not (sc.get("runAsNonRoot") or pod_sc.get("runAsNonRoot")):
            out.append(f"{name}: runAsNonRoot")
        if sc.get("runAsUser", pod_sc.get("runAsUser")) == 0:
            out.append(f"{name}: runAsUser 0")
        seccomp = (sc.get("seccompProfile") or {}).get("type") or pod_seccomp
        if seccomp not in ("RuntimeDefault", "Localhost"):
            out.append(f"{name}: seccompProfile")
        caps = sc.get("capabilities") or {}
        if "ALL" not in (caps.get("drop") or []):
            out.append(f"{name}: capabilities must drop ALL")
        if set(caps.get("add") or []) - {"NET_BIND_SERVICE"}:
            out.append(f"{name}: capabilities added")
        for port in c.get("ports") or []:
            if port.get("hostPort"):
                out.append(f"{name}: hostPort")
    return out
