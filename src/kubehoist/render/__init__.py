"""PURE: static pod -> Deployment, credentials Secret (or image build context), PDB.

Nothing in this package reads a file, a clock or the cluster: the gatherer
(`kubehoist.hostfiles`) reads the node's files and hands the bytes in as `Inputs`,
and the caller passes the time in `RenderOptions.now`.

    pod = manifest.load_static_pod(text, source="kube-controller-manager.yaml")
    inputs = hostfiles.gather_inputs(pod, options, host_root=Path("/"))
    rendered = render(pod, options, inputs)
"""

from kubehoist.render.core import ImageContext, Rendered, default_secret_name, render
from kubehoist.render.credentials import FileNeed, NeedsPlan, collect, plan_flag_needs
from kubehoist.render.flags import FlagPlan, plan_flags
from kubehoist.render.options import Inputs, RenderOptions
from kubehoist.render.serialize import dump, to_json, to_yaml

__all__ = [
    "FileNeed",
    "FlagPlan",
    "ImageContext",
    "Inputs",
    "NeedsPlan",
    "RenderOptions",
    "Rendered",
    "collect",
    "default_secret_name",
    "dump",
    "plan_flag_needs",
    "plan_flags",
    "render",
    "to_json",
    "to_yaml",
]
