"""`render`: a static pod manifest in, the Deployment and its companions out. Pure.

    render(pod, options, inputs) -> Rendered

`pod` is a parsed `StaticPod`, `options` what the user asked for, `inputs` the bytes
the gatherer read from the node (nothing when an existing Secret is named). The same
arguments always give the same objects, in the same order, with the same bytes.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from kubehoist.constants import (
    CREDENTIALS_DIR,
    CREDENTIALS_SHA256_ANNOTATION,
    NONROOT_UID,
    SOURCE_SHA256_ANNOTATION,
    object_labels,
    selector_labels,
)
from kubehoist.errors import KubehoistError, UsageError
from kubehoist.manifest import StaticPod
from kubehoist.render import credentials as creds
from kubehoist.render import mutators
from kubehoist.render.flags import plan_flags
from kubehoist.render.options import Inputs, RenderOptions

SECRET_LIMIT = 1024 * 1024
"""The API server refuses Secrets larger than 1 MiB."""


@dataclass(frozen=True, kw_only=True)
class ImageContext:
    """The article's image build context: a Dockerfile and the files it copies."""

    dockerfile: str
    files: tuple[tuple[str, bytes], ...]
    """(path relative to the context, content), sorted."""
    image: str


@dataclass(frozen=True, kw_only=True)
class Rendered:
    """What render produced, in the order to apply it."""

    objects: tuple[Mapping[str, Any], ...]
    image_context: ImageContext | None
    warnings: tuple[str, ...]
    secret_keys: tuple[str, ...]


def default_secret_name(component: str) -> str:
    return f"{component}-credentials"


def _dedupe(items: list[str]) -> tuple[str, ...]:
    seen: set[str] = set()
    out = []
    for item in items:
        one = " ".join(item.split())
        if one not in seen:
            seen.add(one)
            out.append(one)
    return tuple(out)


def render(pod: StaticPod, options: RenderOptions, inputs: Inputs | None = None) -> Rendered:
    """The Deployment, credentials Secret (or image context) and PDB for `pod`."""
    inputs = inputs or Inputs()
    component = pod.component
    if options.replicas < 1:
        raise UsageError(f"--replicas {options.replicas}: must be at least 1")
    if options.credentials == "image":
        if options.secret_exists:
            raise UsageError("--secret-name and --credentials image exclude each other")
        if not options.image:
            raise UsageError(
                "--credentials image needs --image: the name to build and push the image as"
            )
    if options.server is not None:
        split = urlsplit(options.server)
        if split.scheme != "https" or not split.hostname:
            raise UsageError(f"--server {options.server}: expected https://HOST[:PORT]")

    warnings: list[str] = []
    flag_plan = plan_flags(pod, options)
    warnings.extend(flag_plan.warnings)
    credentials = creds.build(pod, flag_plan.items, options=options, inputs=inputs)
    warnings.extend(credentials.warnings)
    argv = pod.argv.with_items(credentials.items)
    command, args = argv.command_and_args()

    namespace = pod.namespace
    name = component.name
    secret_name = options.secret_name or default_secret_name(name)
    image_mode = options.credentials == "image"
    image = options.image or pod.image

    ctx = mutators.PodContext(
        pod=pod,
        options=options,
        command=command,
        args=args,
        port=flag_plan.port,
        image=image,
        secret_name=None if image_mode else secret_name,
        writable_dirs=credentials.writable_dirs,
    )
    pod_spec, said = mutators.apply(pod.spec, ctx)
    warnings.extend(said)

    base_labels = {"component": name, "tier": "control-plane"}
    template_labels = {**pod.labels, **object_labels(name, extra=base_labels)}
    template_meta: dict[str, Any] = {"labels": template_labels}
    if not image_mode and credentials.files:
        template_meta["annotations"] = {CREDENTIALS_SHA256_ANNOTATION: credentials.sha256}

    labels = object_labels(name, extra=base_labels)
    deployment: dict[str, Any] = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": labels,
            "annotations": {SOURCE_SHA256_ANNOTATION: pod.sha256},
        },
        "spec": {
            "replicas": options.replicas,
            "selector": {"matchLabels": selector_labels(name)},
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
            },
            "template": {"metadata": template_meta, "spec": pod_spec},
        },
    }
    pdb: dict[str, Any] = {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": selector_labels(name)}},
    }

    objects: list[Mapping[str, Any]] = []
    image_context: ImageContext | None = None
    if image_mode:
        assert options.image is not None
        image_context = _image_context(pod, credentials, image=options.image)
        warnings.insert(0, _image_warning(credentials, image=options.image))
    elif not options.secret_exists:
        size = sum(len(content) for _, content in credentials.files)
        if size > SECRET_LIMIT:
            raise KubehoistError(
                f"{pod.source}: the credentials come to {size} bytes, more than a Secret holds "
                f"({SECRET_LIMIT})"
            )
        objects.append(
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": secret_name, "namespace": namespace, "labels": labels},
                "type": "Opaque",
                "data": {
                    key: base64.b64encode(content).decode() for key, content in credentials.files
                },
            }
        )
        if credentials.ca_key_flags:
            warnings.append(
                f"Secret {namespace}/{secret_name} holds the cluster CA's private key (for "
                f"{', '.join(credentials.ca_key_flags)}): whoever can read Secrets in "
                f"{namespace} can mint any identity; keep that RBAC tight"
            )
    objects.append(deployment)
    objects.append(pdb)
    return Rendered(
        objects=tuple(objects),
        image_context=image_context,
        warnings=_dedupe(warnings),
        secret_keys=credentials.keys,
    )


def _image_warning(credentials: creds.Credentials, *, image: str) -> str:
    keys = ", ".join(credentials.keys) or "no files"
    return (
        f"IMAGE MODE: {image} will contain the cluster's credentials ({keys}), private keys "
        "included: anyone who can pull that image owns the cluster. Push it only to a "
        "registry as private as the control-plane nodes themselves"
    )


def _image_context(pod: StaticPod, credentials: creds.Credentials, *, image: str) -> ImageContext:
    keys = ", ".join(credentials.keys) or "(none)"
    dockerfile = "\n".join(
        [
            f"# Rendered by kubehoist from {pod.source} (sha256 {pod.sha256[:12]}).",
            "#",
            "# WARNING: this image holds the cluster's credentials, private keys included:",
            f"#   {keys}",
            "# Anyone who can pull it can act as the control plane (with a CA key: as anyone).",
            "# Push it only to a registry as private as the control-plane nodes.",
            f"FROM {pod.image}",
            f"COPY --chown={NONROOT_UID}:{NONROOT_UID} credentials/ {CREDENTIALS_DIR}/",
            "",
        ]
    )
    return ImageContext(
        dockerfile=dockerfile,
        files=tuple((f"credentials/{key}", content) for key, content in credentials.files),
        image=image,
    )
