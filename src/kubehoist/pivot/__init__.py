"""pivot and rollback: move a control-plane component from its static pods to its
Deployment and back, as named, idempotent, resumable phases.

parking    the static pod manifests on each node: park (move aside, byte for byte,
           with a record) and unpark; locally or through a node-pinned helper pod
handover   "certainly dead" and the lease release that makes a hand-over fast
state      the pivot's progress, recorded on the cluster (a ConfigMap)
workflow   the phase runner (skip, dry run, resume)
phases     the phases of pivot and of rollback
"""
