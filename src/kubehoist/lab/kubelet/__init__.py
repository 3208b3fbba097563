"""The lab kubelet: runs a lab node's static and scheduled pods as isolated processes.

`Kubelet(spec, node, binaries, kubeconfig).run()` is what the lab supervisor runs per
node; `cleanup_node(spec, node)` removes what a dead one left behind. The names are
imported lazily so that the container launcher (`kubehoist.lab.kubelet.launcher`,
started once per container) does not pay for the API client's imports.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kubehoist.lab.kubelet.cleanup import cleanup_node
    from kubehoist.lab.kubelet.kubelet import Kubelet

__all__ = ["Kubelet", "cleanup_node"]


def __getattr__(name: str) -> Any:
    if name == "Kubelet":
        from kubehoist.lab.kubelet.kubelet import Kubelet

        return Kubelet
    if name == "cleanup_node":
        from kubehoist.lab.kubelet.cleanup import cleanup_node

        return cleanup_node
    raise AttributeError(name)
