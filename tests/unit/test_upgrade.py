"""`upgrade complete`'s version skew rule, and the record of pivot's options that it
renders kubeadm's new manifest with."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import ConfigMap

from kubehoist.errors import KubehoistError
from kubehoist.kubeversion import KubeVersion
from kubehoist.pivot.run import asked_options, render_options
from kubehoist.pivot.state import PivotState
from kubehoist.pivot.upgrade import check_skew

KCM = "kube-controller-manager"
NEW = f"registry.k8s.io/{KCM}:v1.36.3"
OLD = f"registry.k8s.io/{KCM}:v1.35.4"


def api(tag: str) -> str:
    return f"registry.k8s.io/kube-apiserver:{tag}"


def test_every_node_upgraded_and_no_older_api_server_is_safe() -> None:
    statics = {"cp-1": NEW, "cp-2": NEW, "cp-3": NEW}
    apis = {"cp-1": api("v1.36.3"), "cp-2": api("v1.36.3"), "cp-3": api("v1.36.1")}
    assert check_skew(KCM, NEW, statics, apis) == KubeVersion(1, 36, 3)


def test_a_node_kubeadm_did_not_upgrade_yet_is_named() -> None:
    statics = {"cp-1": NEW, "cp-2": OLD, "cp-3": NEW}
    apis = dict.fromkeys(statics, api("v1.36.3"))
    with pytest.raises(KubehoistError, match=r"^node cp-2: static kube-controller-manager runs "):
        check_skew(KCM, NEW, statics, apis)
    with pytest.raises(KubehoistError, match=r"node cp-3: no static kube-controller-manager pod"):
        check_skew(KCM, NEW, {**statics, "cp-2": NEW, "cp-3": None}, apis)


def test_an_older_api_server_refuses_a_newer_controller_manager() -> None:
    statics = dict.fromkeys(("cp-1", "cp-2"), NEW)
    apis = {"cp-1": api("v1.36.3"), "cp-2": api("v1.35.4")}
    with pytest.raises(KubehoistError) as err:
        check_skew(KCM, NEW, statics, apis)
    assert str(err.value).startswith(
        "node cp-2: kube-apiserver is v1.35.4, older than kube-controller-manager v1.36.3"
    )
    with pytest.raises(KubehoistError, match=r"node cp-2: the version of kube-apiserver is unk"):
        check_skew(KCM, NEW, statics, {**apis, "cp-2": None})


def test_an_image_without_a_version_needs_one_given() -> None:
    digest = f"registry.k8s.io/{KCM}@sha256:" + "a" * 64
    statics = {"cp-1": digest}
    apis = {"cp-1": api("v1.36.3")}
    with pytest.raises(KubehoistError, match=r"names no version \(pass --kubernetes-version\)"):
        check_skew(KCM, digest, statics, apis)
    given_version = KubeVersion(1, 36, 0)
    assert check_skew(KCM, digest, statics, apis, kubernetes_version=given_version) == given_version


versions = st.tuples(st.integers(1, 1), st.integers(30, 40), st.integers(0, 9))


@given(new=versions, apis=st.lists(versions, min_size=1, max_size=5))
def test_safe_exactly_when_no_api_server_is_an_older_minor(
    new: tuple[int, int, int], apis: list[tuple[int, int, int]]
) -> None:
    image = f"k/{KCM}:v{new[0]}.{new[1]}.{new[2]}"
    nodes = {f"cp-{i}": api(f"v{a}.{b}.{c}") for i, (a, b, c) in enumerate(apis)}
    statics = dict.fromkeys(nodes, image)
    ok = all((a, b) >= new[:2] for a, b, _ in apis)
    if ok:
        assert check_skew(KCM, image, statics, nodes) == KubeVersion(*new)
    else:
        with pytest.raises(KubehoistError, match="must not be newer than an API server"):
            check_skew(KCM, image, statics, nodes)


def test_the_record_keeps_pivots_options_and_the_upgrading_status() -> None:
    asked = asked_options(
        secret_name=None, replicas=3, port=None, image=None, server="https://lb:6443",
        lease_duration="15s", renew_deadline=None, retry_period="500ms",
        set_flag=("--v=2",), drop_flag=(), release_lease_on_exit=True, kubernetes_version=None,
    )  # fmt: skip
    st_ = PivotState(component=KCM, status="upgrading", options=asked)
    cm = ConfigMap(
        metadata=ObjectMeta(name="kubehoist-pivot-x", resourceVersion="3"), data=st_.to_data()
    )
    back = PivotState.from_configmap(cm)
    assert (back.status, back.options) == ("upgrading", asked)
    opts = render_options(back.options)
    assert (opts.replicas, opts.server, opts.retry_period, opts.set_flags) == (
        3, "https://lb:6443", "500ms", ("--v=2",),
    )  # fmt: skip
    assert opts.release_lease_on_exit and opts.image is None
    # a record from before options were kept renders with pivot's defaults
    assert render_options({}).replicas == 2


def test_away_seconds_is_the_union_of_the_long_waits() -> None:
    from bench.upgrade import SLOW_S, away_seconds

    from kubehoist.measure import Sample

    b = 0.1
    samples = [
        Sample(0, 0.0, 0.2),  # quick: not counted
        Sample(1, 1.0, 5.0),  # waits 4 s: away from 1 + b + SLOW_S to 5
        Sample(2, 2.0, 5.5),  # overlaps: the union runs to 5.5
        Sample(3, 10.0, None),  # never answered: away until the end
    ]
    start = 1.0 + b + SLOW_S
    assert away_seconds(samples, baseline=b, end=20.0) == pytest.approx(
        (5.5 - start) + (20.0 - (10.0 + b + SLOW_S))
    )
    assert away_seconds(samples[:1], baseline=b, end=20.0) == 0.0


def test_spans_union_merges_overlaps_and_keeps_gaps() -> None:
    from bench.upgrade import spans_union

    assert spans_union([]) == 0.0
    assert spans_union([(5.0, 7.0), (0.0, 2.0), (1.0, 3.0)]) == pytest.approx(5.0)
    assert spans_union([(0.0, 10.0), (2.0, 3.0)]) == pytest.approx(10.0)
