"""kubehoist: run a kubeadm cluster's kube-controller-manager and kube-scheduler as
Deployments — many standbys, one leader through the Lease — and back, safely."""

__version__ = "0.1.0"
