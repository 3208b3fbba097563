"""Names kubehoist stamps on everything it creates: labels, annotations, field manager.

One module so that render (which creates the objects), pivot (which applies them) and
rollback/guard (which must find and remove only kubehoist's own objects) agree on them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Final

MIRROR_ANNOTATION: Final = "kubernetes.io/config.mirror"
"""The kubelet's mark of a mirror pod (the API's copy of a static pod)."""

FIELD_MANAGER: Final = "kubehoist"
"""The server-side apply field manager of every write kubehoist makes."""

MANAGED_BY_LABEL: Final = "app.kubernetes.io/managed-by"
MANAGED_BY_VALUE: Final = "kubehoist"
NAME_LABEL: Final = "app.kubernetes.io/name"
"""Set to the component name (kube-controller-manager, kube-scheduler)."""
PART_OF_LABEL: Final = "app.kubernetes.io/part-of"
PART_OF_VALUE: Final = "kubehoist"

ANNOTATION_PREFIX: Final = "kubehoist.io/"
SOURCE_SHA256_ANNOTATION: Final = ANNOTATION_PREFIX + "source-manifest-sha256"
"""On the Deployment: sha256 of the static pod manifest it was rendered from."""
CREDENTIALS_SHA256_ANNOTATION: Final = ANNOTATION_PREFIX + "credentials-sha256"
"""On the pod template: sha256 over the credentials, so new credentials roll the pods."""

CREDENTIALS_DIR: Final = "/etc/kubehoist/credentials"
"""Where the credentials Secret (or, in image mode, the baked files) appear in the pod."""

NONROOT_UID: Final = 65532
"""The uid/gid the rendered pods run as (the distroless "nonroot" user)."""


def selector_labels(component: str) -> dict[str, str]:
    """Labels that select exactly kubehoist's pods of one component (never a mirror pod)."""
    return {MANAGED_BY_LABEL: MANAGED_BY_VALUE, NAME_LABEL: component}


def object_labels(component: str, *, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """Labels for every object kubehoist creates for `component`."""
    labels = dict(extra or {})
    labels.update(selector_labels(component))
    labels[PART_OF_LABEL] = PART_OF_VALUE
    return labels


def guard_lease_name(component: str) -> str:
    """The Lease the guards of `component` elect one acting guard with."""
    return f"kubehoist-guard-{component}"


Term = tuple[str, str | tuple[str, ...]]


class Selector(str):
    """A label or field selector: its canonical text (what the API server is sent, what
    tests compare) that also keeps its terms, `key=value` or `key in (values)`, in the
    order of the text (lightkube builds the query from them)."""

    terms: tuple[Term, ...]

    def __new__(cls, terms: Iterable[Term]) -> Selector:
        kept = tuple(terms)
        text = ",".join(
            f"{k}={v}" if isinstance(v, str) else f"{k} in ({','.join(v)})" for k, v in kept
        )
        obj = super().__new__(cls, text)
        obj.terms = kept
        return obj

    def pairs(self) -> list[tuple[str, str | list[str]]]:
        """The terms as lightkube's `labels=` / `fields=` take them."""
        return [(k, v if isinstance(v, str) else list(v)) for k, v in self.terms]


def label_selector(
    *, equals: Mapping[str, str] | None = None, within: Mapping[str, Iterable[str]] | None = None
) -> Selector:
    """`k=v` and `k in (a,b)` terms, sorted so that the same question is the same text."""
    terms: list[Term] = [(k, v) for k, v in sorted((equals or {}).items())]
    for key, values in sorted((within or {}).items()):
        ordered = tuple(sorted(set(values)))
        terms.append((key, ordered[0]) if len(ordered) == 1 else (key, ordered))
    return Selector(terms)


def field_selector(fields: Mapping[str, str]) -> Selector:
    """`k=v` terms, sorted: a field selector."""
    return Selector(sorted(fields.items()))
