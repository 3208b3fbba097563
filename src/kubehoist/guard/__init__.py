"""The guard: brings the static pod back when no controller manager can come back by
itself (fallback), parks it again once the Deployment can take over (hand-back), and
releases the Lease of a holder that is certainly dead (reaper).

decide    PURE decision engine (snapshot -> action, with the reason)
observe   PURE Pod JSON -> the views decide reads
manifest  PURE the guard's static pod manifest and its minimal RBAC
config    the runner's configuration; the fallback marker, pod selectors, log lines
loop      the runner: reads, guards' Lease, actions, Events, logs, metrics
"""
