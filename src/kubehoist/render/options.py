"""The inputs of a render: what the user asked for, and the bytes gathered for it.

Plain frozen data, so the renderer stays a pure function of (manifest, options, inputs).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from types import MappingProxyType
from typing import Literal, TypeAlias

CredentialsMode: TypeAlias = Literal["secret", "image"]
Spread: TypeAlias = Literal["hostname", "zone"]

DEFAULT_REPLICAS = 2
EXPIRY_WARNING = timedelta(days=30)


@dataclass(frozen=True, kw_only=True)
class RenderOptions:
    """What `kubehoist render` was asked to produce."""

    now: datetime
    """The time certificates are checked against (passed in: render reads no clock)."""
    credentials: CredentialsMode = "secret"
    secret_name: str | None = None
    """Name of the credentials Secret; with `secret_exists` it is assumed to exist."""
    secret_exists: bool = False
    """True when the user named an existing Secret: no file is read."""
    replicas: int = DEFAULT_REPLICAS
    port: int | None = None
    """--secure-port of the Deployment (default: the component's deployment port)."""
    image: str | None = None
    node_selector: tuple[tuple[str, str], ...] = ()
    spread: Spread = "hostname"
    server: str | None = None
    lease_duration: str | None = None
    renew_deadline: str | None = None
    retry_period: str | None = None
    set_flags: tuple[str, ...] = ()
    drop_flags: tuple[str, ...] = ()
    host_network: bool = False
    force: bool = False
    expiry_warning: timedelta = EXPIRY_WARNING
    release_lease_on_exit: bool = False
    """Turn on the component's release gate where its version has one (render.releasegate)."""
    kubernetes_version: str | None = None
    """The component's version when the image's tag does not say it."""


@dataclass(frozen=True, kw_only=True)
class Inputs:
    """Bytes gathered from the node for a render (empty when nothing may be read)."""

    files: Mapping[str, bytes] = field(default_factory=lambda: MappingProxyType({}))
    """Container path -> file content, for every file the render needs."""
    control_plane_endpoint: str | None = None
    """The cluster's load-balanced API endpoint, when it could be learned."""
    endpoint_source: str | None = None
    """Where `control_plane_endpoint` came from (for the warning that names it)."""
