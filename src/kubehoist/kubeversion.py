"""Kubernetes versions as kubehoist reads them: from an image tag or from the user.

A component's version decides what it can do (kube-controller-manager releases its
Lease on exit only from v1.36, behind a feature gate), so render and pivot need it.
The image is what the Deployment will run, so its tag is the first witness;
`--kubernetes-version` names it where the tag does not (a digest, a private tag).
Pure.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_VERSION = re.compile(r"v?(\d+)\.(\d+)(?:\.(\d+))?")


@dataclass(frozen=True, order=True)
class KubeVersion:
    """major.minor.patch (patch 0 when a tag says only major.minor)."""

    major: int
    minor: int
    patch: int = 0

    def at_least(self, major: int, minor: int) -> bool:
        return (self.major, self.minor) >= (major, minor)

    def __str__(self) -> str:
        return f"v{self.major}.{self.minor}.{self.patch}"


def parse(text: str) -> KubeVersion | None:
    """`v1.36.3`, `1.36`, `v1.36.0-rc.1`, `v1.10.4_coreos.0` -> the version; else None."""
    m = _VERSION.match(text.strip())
    if not m:
        return None
    return KubeVersion(int(m.group(1)), int(m.group(2)), int(m.group(3) or 0))


def image_tag(image: str) -> str | None:
    """The tag of an image reference (`registry:5000/x/y:v1.36.3@sha256:...` -> v1.36.3)."""
    name = image.split("@", 1)[0]
    last = name.rsplit("/", 1)[-1]
    if ":" not in last:
        return None
    return last.rsplit(":", 1)[1] or None


def from_image(image: str) -> KubeVersion | None:
    """The version an image's tag names, or None (no tag, or a tag that is no version)."""
    tag = image_tag(image)
    return parse(tag) if tag is not None else None
