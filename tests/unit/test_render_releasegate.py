"""The release gate by version: v1.36's kube-controller-manager releases its Lease on
SIGTERM with --release-lease-on-exit; v1.35's cannot, and the option is refused."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from kubehoist import kubeversion
from kubehoist.cli import cli
from kubehoist.errors import UsageError
from kubehoist.manifest import Flag, StaticPod, flag_values, load_static_pod
from kubehoist.render import RenderOptions, plan_flags
from kubehoist.render.releasegate import gate_setting, with_gate_on
from tests.unit.fakenode import NOW, FakeNode, Pki

GATE = "ControllerManagerReleaseLeaderElectionLockOnExit"
CORPUS = Path(__file__).parent / "corpus" / "kube-controller-manager"
KUBEADM_136 = CORPUS / "written-kubeadm-v1.36-extra-volumes.yaml"


def kcm(image: str, *flags: str, component: str = "kube-controller-manager") -> StaticPod:
    command = ", ".join(f"'{t}'" for t in [component, "--kubeconfig=/k.conf", *flags])
    return load_static_pod(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: x}\nspec:\n  containers:\n"
        f"  - name: {component}\n    image: {image}\n    command: [{command}]\n",
        source="x.yaml",
    )


def options(**kw: object) -> RenderOptions:
    return RenderOptions(now=NOW, **kw)  # type: ignore[arg-type]


def gates(pod: StaticPod, opts: RenderOptions) -> tuple[str | None, tuple[str, ...]]:
    plan = plan_flags(pod, opts)
    return flag_values(plan.items).get("feature-gates"), plan.warnings


V136 = "registry.k8s.io/kube-controller-manager:v1.36.3"
V135 = "registry.k8s.io/kube-controller-manager:v1.35.4"


def test_v136_turns_the_gate_on_when_asked_and_stops_warning() -> None:
    value, warnings = gates(kcm(V136), options(release_lease_on_exit=True))
    assert value == f"{GATE}=true"
    assert not [w for w in warnings if "Lease on SIGTERM" in w]


def test_v136_without_the_option_keeps_the_lease_and_says_how_to_release_it() -> None:
    value, warnings = gates(kcm(V136), options())
    assert value is None
    [warning] = [w for w in warnings if "Lease on SIGTERM" in w]
    assert "v1.36.3" in warning and GATE in warning and "--release-lease-on-exit" in warning


def test_the_gate_is_merged_into_the_existing_feature_gates() -> None:
    pod = kcm(V136, "--feature-gates=A=true,B=false", "--v=2")
    plan = plan_flags(pod, options(release_lease_on_exit=True))
    [flag] = [i for i in plan.items if isinstance(i, Flag) and i.name == "feature-gates"]
    assert flag.value == f"A=true,B=false,{GATE}=true"
    # in place: the flag did not move behind --v
    names = [i.name for i in plan.items if isinstance(i, Flag)]
    assert names.index("feature-gates") < names.index("v")


def test_a_static_pod_with_the_gate_off_is_turned_on_where_the_user_agrees() -> None:
    pod = kcm(V136, f"--feature-gates=A=true,{GATE}=false")
    value, _ = gates(pod, options(release_lease_on_exit=True))
    assert value == f"A=true,{GATE}=true"


def test_a_static_pod_with_the_gate_on_needs_nothing_and_gets_no_warning() -> None:
    pod = kcm(V136, f"--feature-gates={GATE}=true")
    value, warnings = gates(pod, options())
    assert value == f"{GATE}=true"
    assert not [w for w in warnings if "Lease on SIGTERM" in w]


def test_the_users_own_gate_off_conflicts_with_the_option() -> None:
    opts = options(release_lease_on_exit=True, set_flags=(f"--feature-gates={GATE}=false",))
    with pytest.raises(UsageError, match=rf"conflicts with --set-flag --feature-gates {GATE}"):
        plan_flags(kcm(V136), opts)


def test_v135_refuses_the_option_in_one_line() -> None:
    with pytest.raises(UsageError) as err:
        plan_flags(kcm(V135), options(release_lease_on_exit=True))
    assert str(err.value) == (
        f"--release-lease-on-exit: kube-controller-manager v1.35.4 (image {V135}) has no "
        f"feature gate {GATE} (alpha from v1.36): it keeps its Lease on SIGTERM"
    )


def test_v135_warns_that_it_keeps_its_lease() -> None:
    value, warnings = gates(kcm(V135), options())
    assert value is None
    [warning] = [w for w in warnings if "Lease on SIGTERM" in w]
    assert warning.startswith("kube-controller-manager v1.35.4 keeps its Lease on SIGTERM")
    # one replica: nobody waits for the Lease, nothing to say
    assert not [w for w in gates(kcm(V135), options(replicas=1))[1] if "SIGTERM" in w]


def test_the_image_option_decides_over_the_static_pods_tag() -> None:
    value, _ = gates(kcm(V135), options(image=V136, release_lease_on_exit=True))
    assert value == f"{GATE}=true"
    with pytest.raises(UsageError, match=r"v1\.35\.4"):
        plan_flags(kcm(V136), options(image=V135, release_lease_on_exit=True))


def test_a_tag_that_is_no_version_needs_kubernetes_version() -> None:
    image = "registry.example/kcm@sha256:" + "0" * 64
    with pytest.raises(UsageError, match="pass --kubernetes-version"):
        plan_flags(kcm(image), options(release_lease_on_exit=True))
    value, _ = gates(kcm(image), options(release_lease_on_exit=True, kubernetes_version="v1.36.0"))
    assert value == f"{GATE}=true"
    with pytest.raises(UsageError, match=r"v1\.35\.4 \(--kubernetes-version\)"):
        plan_flags(kcm(image), options(release_lease_on_exit=True, kubernetes_version="v1.35.4"))
    with pytest.raises(UsageError, match=r"expected vMAJOR\.MINOR\.PATCH"):
        plan_flags(kcm(image), options(kubernetes_version="latest"))


def test_the_scheduler_always_releases_and_refuses_the_option() -> None:
    pod = kcm("registry.k8s.io/kube-scheduler:v1.36.3", component="kube-scheduler")
    assert not [w for w in plan_flags(pod, options()).warnings if "SIGTERM" in w]
    with pytest.raises(UsageError, match="releases its Lease on exit in every version"):
        plan_flags(pod, options(release_lease_on_exit=True))


@pytest.mark.parametrize(
    ("values", "want"),
    [
        ([], None),
        ([f"{GATE}=true"], True),
        ([f" {GATE} = True "], True),
        ([f"{GATE}=true", f"{GATE}=false"], False),  # the last occurrence wins
        ([f"{GATE}=false,A=true,{GATE}=1"], True),
        ([f"{GATE}=maybe"], None),
    ],
)
def test_gate_setting_follows_the_components_parsing(values: list[str], want: bool | None) -> None:
    items = [Flag(name="feature-gates", value=v, form="equals") for v in values]
    assert gate_setting(items, GATE) is want
    assert gate_setting(with_gate_on(items, GATE), GATE) is True


@pytest.mark.parametrize(
    ("image", "want"),
    [
        ("registry.k8s.io/kube-controller-manager:v1.36.3", (1, 36, 3)),
        ("localhost:5000/kcm:v1.35.4@sha256:" + "a" * 64, (1, 35, 4)),
        ("zhoujing/kube-controller-manager:1.14", (1, 14, 0)),
        ("quay.io/coreos/hyperkube:v1.10.4_coreos.0", (1, 10, 4)),
        ("localhost:5000/kcm", None),
        ("kcm:latest", None),
    ],
)
def test_versions_from_image_tags(image: str, want: tuple[int, int, int] | None) -> None:
    got = kubeversion.from_image(image)
    assert (None if got is None else (got.major, got.minor, got.patch)) == want


def test_render_cli_sets_the_gate_on_a_v136_kubeadm_manifest(tmp_path: Path) -> None:
    node = FakeNode(tmp_path / "node", Pki())
    pod = load_static_pod(KUBEADM_136.read_text(), source=KUBEADM_136.name)
    node.populate(pod, RenderOptions(now=datetime.now(UTC)))
    args = ["render", "-f", str(KUBEADM_136), "--host-root", str(node.root)]
    result = CliRunner().invoke(cli, [*args, "--release-lease-on-exit"])
    assert result.exit_code == 0, result.output
    deployment = next(d for d in yaml.safe_load_all(result.stdout) if d["kind"] == "Deployment")
    command = deployment["spec"]["template"]["spec"]["containers"][0]["command"]
    assert f"--feature-gates={GATE}=true" in command
    assert "Lease on SIGTERM" not in result.stderr
    # the same manifest on v1.35: one line, non-zero exit, nothing on stdout
    result = CliRunner().invoke(cli, [*args, "--release-lease-on-exit", "--image", V135])
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    assert result.stderr.strip().splitlines() == [
        f"error: --release-lease-on-exit: kube-controller-manager v1.35.4 (image {V135}) has "
        f"no feature gate {GATE} (alpha from v1.36): it keeps its Lease on SIGTERM"
    ]
