"""The lab's upgrade waits for a node to be back in service before the next one."""

from __future__ import annotations

import datetime

from lightkube.models.core_v1 import NodeCondition, NodeStatus, NodeSystemInfo
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import Node

from kubehoist.lab.install import Steady, kubelet_back

T0 = datetime.datetime(2026, 12, 3, 1, 0, 0, tzinfo=datetime.UTC)


def _node(version: str, ready: str, beat: datetime.datetime | None) -> Node:
    info = NodeSystemInfo(
        architecture="amd64", bootID="b", containerRuntimeVersion="containerd://2",
        kernelVersion="6", kubeProxyVersion="", kubeletVersion=version, machineID="m",
        operatingSystem="linux", osImage="Debian", systemUUID="u",
    )  # fmt: skip
    cond = NodeCondition(type="Ready", status=ready, lastHeartbeatTime=beat)
    return Node(
        metadata=ObjectMeta(name="cp-2"), status=NodeStatus(nodeInfo=info, conditions=[cond])
    )


def test_kubelet_back_needs_the_new_version_ready_since_the_restart() -> None:
    later = T0 + datetime.timedelta(seconds=3)
    assert kubelet_back(_node("v1.36.3", "True", later), "v1.36.3", T0)
    assert kubelet_back(_node("v1.36.3", "True", T0), "v1.36.3", T0)
    # the old kubelet's status, still on the object
    assert not kubelet_back(_node("v1.35.4", "True", later), "v1.36.3", T0)
    # the condition from before the restart
    earlier = T0 - datetime.timedelta(seconds=1)
    assert not kubelet_back(_node("v1.36.3", "True", earlier), "v1.36.3", T0)
    assert not kubelet_back(_node("v1.36.3", "False", later), "v1.36.3", T0)
    assert not kubelet_back(_node("v1.36.3", "Unknown", None), "v1.36.3", T0)
    assert not kubelet_back(Node(metadata=ObjectMeta(name="cp-2")), "v1.36.3", T0)


def test_steady_needs_an_unbroken_run_and_starts_again_after_a_break() -> None:
    s = Steady(5.0)
    assert not s.passed(True, 100.0)
    assert not s.passed(True, 104.9)
    assert not s.passed(False, 105.0)  # a break: the count starts again
    assert not s.passed(True, 106.0)
    assert not s.passed(True, 110.5)
    assert s.passed(True, 111.0)
