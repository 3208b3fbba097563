"""Image names as containerd stores them, and the runtime part of an image's config."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Final

from kubehoist.errors import KubehoistError

ARCHITECTURE: Final = "amd64"
OS: Final = "linux"


def normalize(image: str) -> str:
    """The full name containerd stores an image under: `busybox:1.36` is
    `docker.io/library/busybox:1.36`, a name without a tag is `:latest`."""
    name = image.strip()
    if not name or any(c.isspace() for c in name) or "@" in name:
        raise KubehoistError(f"image name {image!r}: not of the form [registry/]repository[:tag]")
    tag = "latest"
    if ":" in name.rsplit("/", 1)[-1]:
        name, tag = name.rsplit(":", 1)
    first, _, rest = name.partition("/")
    if rest and ("." in first or ":" in first or first == "localhost"):
        registry, repository = first, rest
    else:
        registry, repository = "docker.io", name
    if registry == "docker.io" and "/" not in repository:
        repository = f"library/{repository}"
    if not tag or not repository or repository != repository.lower():
        raise KubehoistError(f"image name {image!r}: not of the form [registry/]repository[:tag]")
    return f"{registry}/{repository}:{tag}"


def tag_of(name: str) -> str:
    """The tag of a normalized name (what OCI's `org.opencontainers.image.ref.name` holds)."""
    return name.rsplit(":", 1)[-1]


def canonical_json(doc: Any) -> bytes:
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


@dataclass(frozen=True)
class ImageConfig:
    """The runtime part of an image's config (what `docker inspect` shows as Config)."""

    env: tuple[str, ...] = ()  # "KEY=value"
    entrypoint: tuple[str, ...] | None = None
    cmd: tuple[str, ...] | None = None
    working_dir: str = ""
    user: str = ""
    labels: tuple[tuple[str, str], ...] = ()
    exposed_ports: tuple[str, ...] = ()

    def document(self, diff_ids: Sequence[str]) -> dict[str, Any]:
        config: dict[str, Any] = {"Env": list(self.env)}
        if self.entrypoint is not None:
            config["Entrypoint"] = list(self.entrypoint)
        if self.cmd is not None:
            config["Cmd"] = list(self.cmd)
        if self.working_dir:
            config["WorkingDir"] = self.working_dir
        if self.user:
            config["User"] = self.user
        if self.labels:
            config["Labels"] = dict(self.labels)
        if self.exposed_ports:
            config["ExposedPorts"] = {p: {} for p in self.exposed_ports}
        return {
            "architecture": ARCHITECTURE,
            "os": OS,
            "config": config,
            "rootfs": {"type": "layers", "diff_ids": list(diff_ids)},
        }

    @classmethod
    def from_document(cls, doc: Mapping[str, Any]) -> ImageConfig:
        c = doc.get("config") or {}
        entrypoint, cmd = c.get("Entrypoint"), c.get("Cmd")
        return cls(
            env=tuple(str(e) for e in c.get("Env") or ()),
            entrypoint=None if entrypoint is None else tuple(str(a) for a in entrypoint),
            cmd=None if cmd is None else tuple(str(a) for a in cmd),
            working_dir=str(c.get("WorkingDir") or ""),
            user=str(c.get("User") or ""),
            labels=tuple(sorted((str(k), str(v)) for k, v in (c.get("Labels") or {}).items())),
            exposed_ports=tuple(sorted(str(p) for p in c.get("ExposedPorts") or {})),
        )

    def with_env(self, key: str, value: str) -> ImageConfig:
        env = [e for e in self.env if e.partition("=")[0] != key]
        return replace(self, env=(*env, f"{key}={value}"))
