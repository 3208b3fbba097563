"""A control-plane node's files, as pivot and the guard need them: static pod manifests
parked and put back byte for byte (parking), on the node itself or from a workstation
through short-lived pods pinned to the node (helperpod) that run shell scripts (scripts)."""
