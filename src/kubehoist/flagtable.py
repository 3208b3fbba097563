"""Which flags kube-controller-manager and kube-scheduler know, and which are booleans.

The components parse their command line with spf13/pflag, whose grammar decides what a
word after a flag is:

* a boolean flag takes a value only as `--flag=value`; a bare `--flag` means true, and
  a word after it (`--leader-elect false`) is a positional argument;
* any other flag takes its value as `--flag=value` or as the next word, whatever that
  word looks like (`--kubeconfig /etc/kubernetes/controller-manager.conf`);
* the components refuse positional arguments (cobra `Args`: any non-empty one).

So render needs, per component, the names of its boolean flags and of its other flags.
The tables below hold the flags of v1.36 (`kube-controller-manager --help`,
`kube-scheduler --help`; tests/e2e/test_flagtable.py checks them against the
binaries), plus flags earlier releases had (klog's flags before v1.26,
`--port`/`--address`, the scheduler's policy flags, ...) so that older manifests parse
as their own release parsed them. pflag normalises `_` to `-` in names (the components
install `WordSepNormalizeFunc`), and so does `normalize`.
"""

from __future__ import annotations

from typing import Final


def normalize(name: str) -> str:
    """The name as the components look it up (`concurrent_rc_syncs` -> `concurrent-rc-syncs`)."""
    return name.replace("_", "-")


def _names(text: str) -> frozenset[str]:
    return frozenset(normalize(n) for n in text.split())


# ------------------------------------------------------------------ shared by both

LOGGING_BOOLS: Final = _names(
    """
    log-json-split-stream log-text-split-stream help h version
    add-dir-header alsologtostderr logtostderr one-output skip-headers skip-log-headers
    log-flush-frequency-disabled
    """
)
"""component-base logs and global flags; klog's booleans (removed in v1.26) after them.
`--version` is not a boolean but, like one, takes a value only after `=`."""

LOGGING_VALUES: Final = _names(
    """
    log-flush-frequency log-json-info-buffer-size log-text-info-buffer-size logging-format
    v vmodule
    log-dir log-file log-file-max-size log-backtrace-at stderrthreshold
    """
)

SERVING_BOOLS: Final = _names(
    """
    permit-address-sharing permit-port-sharing disable-http2-serving
    authentication-skip-lookup authentication-tolerate-lookup-failure
    profiling contention-profiling
    leader-elect
    """
)
"""Secure serving, delegated authentication, debugging and leader election."""

SERVING_VALUES: Final = _names(
    """
    bind-address secure-port cert-dir http2-max-streams-per-connection
    tls-cert-file tls-private-key-file tls-cipher-suites tls-min-version tls-sni-cert-key
    authentication-kubeconfig authentication-token-webhook-cache-ttl client-ca-file
    requestheader-allowed-names requestheader-client-ca-file
    requestheader-extra-headers-prefix requestheader-group-headers
    requestheader-username-headers requestheader-uid-headers
    authorization-always-allow-paths authorization-kubeconfig
    authorization-webhook-cache-authorized-ttl authorization-webhook-cache-unauthorized-ttl
    leader-elect-lease-duration leader-elect-renew-deadline leader-elect-resource-lock
    leader-elect-resource-name leader-elect-resource-namespace leader-elect-retry-period
    kubeconfig master kube-api-burst kube-api-content-type kube-api-qps
    feature-gates emulated-version
    allow-metric-labels allow-metric-labels-manifest disabled-metrics
    show-hidden-metrics-for-version min-compatibility-version tls-curve-preferences
    address port
    """
)
"""`--address` and `--port` (the insecure port) went in v1.24."""

# ------------------------------------------------------------------ kube-controller-manager

KCM_BOOLS: Final = (
    LOGGING_BOOLS
    | SERVING_BOOLS
    | _names(
        """
        allocate-node-cidrs configure-cloud-routes use-service-account-credentials
        enable-leader-migration
        disable-attach-detach-reconcile-sync disable-force-detach-on-timeout
        enable-dynamic-provisioning enable-hostpath-provisioner
        volume-host-allow-local-loopback
        enable-garbage-collector
        allow-untagged-cloud enable-taint-manager horizontal-pod-autoscaler-use-rest-clients
        """
    )
)
"""The last line: booleans of earlier releases."""

KCM_VALUES: Final = (
    LOGGING_VALUES
    | SERVING_VALUES
    | _names(
        """
        cidr-allocator-type cloud-config cloud-provider cluster-cidr cluster-name
        controller-start-interval controllers external-cloud-volume-plugin
        leader-migration-config min-resync-period node-monitor-period
        route-reconciliation-period
        attach-detach-reconcile-sync-period
        cluster-signing-duration cluster-signing-cert-file cluster-signing-key-file
        cluster-signing-kube-apiserver-client-cert-file
        cluster-signing-kube-apiserver-client-key-file
        cluster-signing-kubelet-client-cert-file cluster-signing-kubelet-client-key-file
        cluster-signing-kubelet-serving-cert-file cluster-signing-kubelet-serving-key-file
        cluster-signing-legacy-unknown-cert-file cluster-signing-legacy-unknown-key-file
        concurrent-cron-job-syncs concurrent-daemonset-syncs concurrent-deployment-syncs
        concurrent-device-taint-eviction-syncs concurrent-endpoint-syncs
        concurrent-ephemeralvolume-syncs concurrent-gc-syncs
        concurrent-horizontal-pod-autoscaler-syncs concurrent-job-syncs
        concurrent-namespace-syncs concurrent-rc-syncs concurrent-replicaset-syncs
        concurrent-resource-claim-syncs concurrent-resource-quota-syncs
        concurrent-service-endpoint-syncs concurrent-service-syncs
        concurrent-serviceaccount-token-syncs concurrent-statefulset-syncs
        concurrent-ttl-after-finished-syncs
        concurrent-validating-admission-policy-status-syncs
        endpoint-updates-batch-period endpointslice-updates-batch-period
        max-endpoints-per-slice
        mirroring-concurrent-service-endpoint-syncs
        mirroring-endpointslice-updates-batch-period mirroring-max-endpoints-per-subset
        horizontal-pod-autoscaler-cpu-initialization-period
        horizontal-pod-autoscaler-downscale-stabilization
        horizontal-pod-autoscaler-initial-readiness-delay
        horizontal-pod-autoscaler-sync-period horizontal-pod-autoscaler-tolerance
        legacy-service-account-token-clean-up-period
        namespace-sync-period
        node-cidr-mask-size node-cidr-mask-size-ipv4 node-cidr-mask-size-ipv6
        service-cluster-ip-range
        large-cluster-size-threshold node-eviction-rate node-monitor-grace-period
        node-startup-grace-period secondary-node-eviction-rate unhealthy-zone-threshold
        flex-volume-plugin-dir pv-recycler-increment-timeout-nfs
        pv-recycler-minimum-timeout-hostpath pv-recycler-minimum-timeout-nfs
        pv-recycler-pod-template-filepath-hostpath pv-recycler-pod-template-filepath-nfs
        pv-recycler-timeout-increment-hostpath pvclaimbinder-sync-period
        volume-host-cidr-denylist
        terminated-pod-gc-threshold resource-quota-sync-period
        root-ca-file service-account-private-key-file
        concurrent-resourceclaim-syncs controller-shutdown-timeout

        pod-eviction-timeout deleting-pods-burst deleting-pods-qps node-sync-period
        experimental-cluster-signing-duration horizontal-pod-autoscaler-upscale-delay
        horizontal-pod-autoscaler-downscale-delay register-retry-count
        insecure-experimental-approve-all-kubelet-csrs-for-group
        cloud-provider-gce-lb-src-cidrs cloud-provider-gce-l7lb-src-cidrs
        concurrent-endpointslice-syncs service-sync-period
        """
    )
)
"""After the blank line: flags of earlier releases."""

# ------------------------------------------------------------------ kube-scheduler

SCHEDULER_BOOLS: Final = LOGGING_BOOLS | SERVING_BOOLS | _names("use-legacy-policy-config")
"""`--use-legacy-policy-config` went with the policy flags in v1.23."""

SCHEDULER_VALUES: Final = (
    LOGGING_VALUES
    | SERVING_VALUES
    | _names(
        """
        config write-config-to pod-max-in-unschedulable-pods-duration

        policy-config-file policy-configmap policy-configmap-namespace algorithm-provider
        scheduler-name hard-pod-affinity-symmetric-weight lock-object-name
        lock-object-namespace
        """
    )
)
"""After the blank line: flags of earlier releases."""

assert not KCM_BOOLS & KCM_VALUES
assert not SCHEDULER_BOOLS & SCHEDULER_VALUES
