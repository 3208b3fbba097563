"""Kubernetes Events on the component's Deployment for every phase pivot, rollback
(and later guard) complete, so `kubectl describe deployment -n kube-system
kube-controller-manager` tells what kubehoist did. Best effort: an Event that cannot be
written never fails the operation."""

from __future__ import annotations

import datetime as dt
import logging
import uuid

from lightkube import Client
from lightkube.core.exceptions import ApiError
from lightkube.models.core_v1 import EventSource, ObjectReference
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import Event

from kubehoist.errors import KubehoistError
from kubehoist.kube import retry

log = logging.getLogger(__name__)

NAMESPACE = "kube-system"


def event(
    *, component: str, reason: str, message: str, kind: str = "Normal", now: dt.datetime
) -> Event:
    return Event(
        metadata=ObjectMeta(
            name=f"{component}.kubehoist-{uuid.uuid4().hex[:10]}", namespace=NAMESPACE
        ),
        involvedObject=ObjectReference(
            apiVersion="apps/v1", kind="Deployment", name=component, namespace=NAMESPACE
        ),
        reason=reason,
        message=message[:1024],
        type=kind,
        source=EventSource(component="kubehoist"),
        firstTimestamp=now,
        lastTimestamp=now,
        count=1,
    )


RECORD_WITHIN_S = 5.0
"""An Event is not worth waiting for: an API server away for longer is not waited for
here (the next phase waits for it, within its own timeout)."""


def record(
    client: Client, *, component: str, reason: str, message: str, kind: str = "Normal"
) -> None:
    try:
        with retry.within(RECORD_WITHIN_S):
            client.create(
                event(
                    component=component,
                    reason=reason,
                    message=message,
                    kind=kind,
                    now=dt.datetime.now(dt.UTC),
                )
            )
    except (ApiError, KubehoistError, OSError) as exc:  # never fail a pivot for an Event
        log.debug("event %s not recorded: %s", reason, exc)
    except Exception as exc:  # transport errors of the client
        log.debug("event %s not recorded: %r", reason, exc)
