"""The lab: real upstream Kubernetes binaries on one machine (see docs/lab.md)."""
