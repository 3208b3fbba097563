"""Everything the lab kubelet asks of the API server, in one place: the pods bound to
its node, mirror pods, pod status, the Node's UID, and the data of secret, configMap
and service-account-token volumes. A thin layer over lightkube's AsyncClient that
speaks in plain dicts; every error is an `ApiFailure`, 404s are `None`.
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any, TypeVar, cast

import httpx2 as httpx
from lightkube import ApiError, AsyncClient, KubeConfig
from lightkube.models.authentication_v1 import BoundObjectReference, TokenRequestSpec
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import (
    ConfigMap,
    Node,
    Pod,
    PodStatus,
    Secret,
    ServiceAccountToken,
)
from lightkube.types import PatchType

from kubehoist.lab.kubelet.podspec import PodSpec

R = TypeVar("R", Pod, Node, Secret, ConfigMap)

FIELD_MANAGER = "kubehoist-lab-kubelet"


class ApiFailure(Exception):
    """A request that failed; `code` is the HTTP status if the server answered."""

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


def _failure(exc: Exception) -> ApiFailure:
    if isinstance(exc, ApiError):
        return ApiFailure(str(exc.status.message), exc.status.code)
    return ApiFailure(f"{type(exc).__name__}: {exc}")


class KubeletApi:
    def __init__(self, kubeconfig: Path, node_name: str) -> None:
        config = KubeConfig.from_file(str(kubeconfig))
        self.client = AsyncClient(
            config=config, field_manager=FIELD_MANAGER, timeout=httpx.Timeout(20.0)
        )
        self.node_name = node_name

    async def _get_optional(
        self, res: type[R], name: str, *, namespace: str | None = None
    ) -> R | None:
        """The object, None when the API says 404; any other failure as `_failure`."""
        try:
            # cast: lightkube types namespaced and cluster-wide get() separately
            obj = cast(R, await self.client.get(cast(Any, res), name, namespace=namespace))
        except ApiError as exc:
            if exc.status.code == 404:
                return None
            raise _failure(exc) from exc
        except httpx.HTTPError as exc:
            raise _failure(exc) from exc
        return obj

    async def close(self) -> None:
        await self.client.close()

    # --- pods ---------------------------------------------------------------------
    async def list_pods(self) -> list[dict[str, Any]]:
        try:
            return [
                p.to_dict()
                async for p in self.client.list(
                    Pod, namespace="*", fields={"spec.nodeName": self.node_name}
                )
            ]
        except (ApiError, httpx.HTTPError) as exc:
            raise _failure(exc) from exc

    async def watch_pods(self) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        try:
            async for op, pod in self.client.watch(
                Pod, namespace="*", fields={"spec.nodeName": self.node_name}, server_timeout=120
            ):
                yield op, pod.to_dict()
        except (ApiError, httpx.HTTPError) as exc:
            raise _failure(exc) from exc

    async def get_pod(self, namespace: str, name: str) -> dict[str, Any] | None:
        pod = await self._get_optional(Pod, name, namespace=namespace)
        return None if pod is None else dict(pod.to_dict())

    async def create_pod(self, body: Mapping[str, Any]) -> dict[str, Any]:
        try:
            obj = cast(Pod, Pod.from_dict(dict(body)))
            created: Pod = await self.client.create(obj)
            return dict(created.to_dict())
        except (ApiError, httpx.HTTPError) as exc:
            raise _failure(exc) from exc

    async def delete_pod(self, namespace: str, name: str) -> None:
        """Delete now (grace 0); a pod already gone is no error."""
        try:
            await self.client.delete(Pod, name, namespace=namespace, grace_period=0)
        except ApiError as exc:
            if exc.status.code != 404:
                raise _failure(exc) from exc
        except httpx.HTTPError as exc:
            raise _failure(exc) from exc

    async def patch_status(
        self, namespace: str, name: str, uid: str, status: Mapping[str, Any]
    ) -> None:
        """A merge patch of pods/status; the UID in the body makes it fail on a pod
        of the same name but another UID (uid is immutable)."""
        body = {"metadata": {"uid": uid}, "status": dict(status)}
        try:
            await self.client.patch(
                PodStatus, name, body, namespace=namespace, patch_type=PatchType.MERGE
            )
        except (ApiError, httpx.HTTPError) as exc:
            raise _failure(exc) from exc

    async def node_uid(self) -> str | None:
        node = await self._get_optional(Node, self.node_name)
        if node is None:
            return None
        return node.metadata.uid if node.metadata else None

    # --- volume data (kubehoist.lab.kubelet.volumes.VolumeData) -------------------
    async def secret(self, namespace: str, name: str) -> Mapping[str, bytes] | None:
        obj = await self._get_optional(Secret, name, namespace=namespace)
        if obj is None:
            return None
        out = {k: base64.b64decode(v) for k, v in (obj.data or {}).items()}
        out.update({k: v.encode() for k, v in (obj.stringData or {}).items()})
        return out

    async def config_map(self, namespace: str, name: str) -> Mapping[str, bytes] | None:
        obj = await self._get_optional(ConfigMap, name, namespace=namespace)
        if obj is None:
            return None
        out = {k: v.encode() for k, v in (obj.data or {}).items()}
        out.update({k: base64.b64decode(v) for k, v in (obj.binaryData or {}).items()})
        return out

    async def token(self, pod: PodSpec, audience: str, expiration_seconds: int) -> str:
        """A bound service-account token through the TokenRequest API."""
        request = ServiceAccountToken(
            metadata=ObjectMeta(name=pod.service_account, namespace=pod.namespace),
            spec=TokenRequestSpec(
                audiences=[audience] if audience else [],
                expirationSeconds=expiration_seconds,
                boundObjectRef=BoundObjectReference(
                    kind="Pod", apiVersion="v1", name=pod.name, uid=pod.uid
                ),
            ),
        )
        try:
            result = await self.client.create(request, pod.service_account, namespace=pod.namespace)
        except (ApiError, httpx.HTTPError) as exc:
            raise _failure(exc) from exc
        if result.status is None:
            raise ApiFailure("TokenRequest returned no token")
        return str(result.status.token)
