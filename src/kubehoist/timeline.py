"""PURE: the election timeline — from observed Leases and pods to events, with lease gaps.

A `Timeline` is fed what the watch streams deliver (a Lease seen, a pod seen or gone,
a stream interrupted) together with the observer's monotonic clock, and returns
`Event`s: leader changes, releases, expiries, candidates appearing, leaving, getting
Ready. It keeps the state, so feeding it the same object twice (a relist after an API
server restart) yields nothing: events come from differences in state, never from
raw watch events, hence no duplicates.

The lease gap of a leader change is the time with no valid holder, all by our clock:
it starts when the old holder released the Lease (the release seen) or when its
lease ran out as a standby would time it (last change seen + lease duration), and
ends when the new holder is seen. `since_last_renew_s` is the time from the last
change seen of the old holder's record to the new holder: what an operator calls
"how long there was no working leader" after a crash. `measured` is false when the
numbers rest on less than a full view (the old record was never seen to change, or
the Lease stream was interrupted in between); `missed_transitions` counts leader
changes that happened while we were not looking (from `leaseTransitions`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from kubehoist.election import (
    Assessment,
    Candidate,
    LeaseRecord,
    Observation,
    Validity,
    assess,
    first_observation,
    match_holder,
    parse_identity,
)
from kubehoist.kube.objects import GuardEvent

JsonValue = str | int | float | bool | None | list[Any] | dict[str, Any]


@dataclass(frozen=True, kw_only=True)
class Event:
    """One line of the timeline. `data` keys are part of the stable JSON interface."""

    kind: str
    component: str
    at: float
    """Monotonic seconds (the observer's clock)."""
    wall: datetime
    data: Mapping[str, JsonValue] = field(default_factory=dict)

    def to_json(self, *, origin: float) -> dict[str, JsonValue]:
        out: dict[str, JsonValue] = {
            "event": self.kind,
            "time": self.wall.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "t": round(self.at - origin, 3),
            "component": self.component,
        }
        out.update(self.data)
        return out


def _iso(value: datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value is not None else None


def _r(value: float | None) -> float | None:
    return round(value, 3) if value is not None else None


def describe(candidate: Candidate | None) -> dict[str, JsonValue]:
    if candidate is None:
        return {"pod": None, "node": None, "kind": None}
    return {"pod": candidate.name, "node": candidate.node, "kind": candidate.kind.value}


@dataclass
class _State:
    observation: Observation | None = None
    candidates: dict[str, Candidate] = field(default_factory=dict)
    vacant_since: float | None = None
    expired_reported: bool = False
    lease_blind_since: float | None = None
    last_interruption: float | None = None
    verdict: str | None = None
    last_leader: Candidate | None = None
    guard_counts: dict[str, int] = field(default_factory=dict)
    """Each guard Event seen (by name) and its count: an action is reported once."""


class Timeline:
    """The state of every component's election as observed, and its events."""

    def __init__(self, components: Sequence[str], *, default_duration_s: float = 15.0) -> None:
        self.components = tuple(components)
        self.default_duration_s = default_duration_s
        self._state = {c: _State() for c in self.components}
        self.started = False

    # --- queries -------------------------------------------------------------
    def observation(self, component: str) -> Observation | None:
        return self._state[component].observation

    def candidates(self, component: str) -> tuple[Candidate, ...]:
        return tuple(self._state[component].candidates.values())

    def assessment(self, component: str, *, now: float) -> Assessment:
        state = self._state[component]
        return assess(
            component=component,
            observation=state.observation,
            candidates=self.candidates(component),
            now=now,
        )

    def blind(self, component: str) -> bool:
        return self._state[component].lease_blind_since is not None

    # --- inputs --------------------------------------------------------------
    def start(self, *, now: float, wall: datetime) -> list[Event]:
        """Everything listed once: say what we see, and from now on report changes."""
        self.started = True
        events = []
        for component in self.components:
            a = self.assessment(component, now=now)
            self._state[component].verdict = a.verdict.value
            obs = self._state[component].observation
            events.append(
                Event(
                    kind="observing",
                    component=component,
                    at=now,
                    wall=wall,
                    data={
                        "holder": obs.lease.holder if obs else None,
                        **describe(a.leader),
                        "transitions": obs.lease.transitions if obs else None,
                        "candidates": [c.name for c in self.candidates(component)],
                        "ready": [c.name for c in self.candidates(component) if c.ready],
                        "verdict": a.verdict.value,
                    },
                )
            )
        return events

    def lease_seen(
        self, component: str, lease: LeaseRecord | None, *, now: float, wall: datetime
    ) -> list[Event]:
        """A Lease as listed or watched; None when it was deleted."""
        state = self._state[component]
        state.lease_blind_since = None
        prev = state.observation
        events: list[Event] = []

        def emit(kind: str, /, **data: JsonValue) -> None:
            if self.started:
                events.append(Event(kind=kind, component=component, at=now, wall=wall, data=data))

        if lease is None:
            if prev is not None:
                state.observation = None
                state.vacant_since = None
                emit("lease_deleted", holder=prev.lease.holder)
            return events + self._verdict(component, now=now, wall=wall)
        if prev is None:
            state.observation = first_observation(lease, now=now)
            state.vacant_since = None if lease.held else now
            emit("lease_created", holder=lease.holder)
            return events + self._verdict(component, now=now, wall=wall)

        current = prev.observe(lease, now=now)
        old, new = prev.lease.holder, lease.holder
        if old != new and new is None:
            start = now
            if old and now >= prev.valid_until(default_duration_s=self.default_duration_s):
                start = prev.valid_until(default_duration_s=self.default_duration_s)
            state.vacant_since = start if state.vacant_since is None else state.vacant_since
            emit(
                "lease_released",
                holder=old,
                **describe(self._match(component, old)),
                since_last_renew_s=_r(now - prev.reference),
            )
        elif old != new:
            assert new is not None
            emit("leader_changed", **self._change(component, prev, lease, now=now))
            state.vacant_since = None
            state.expired_reported = False
        elif current.changed_at == now and state.expired_reported:
            # The holder we had given up on renewed after all (we were partitioned, or
            # it was slow): its lease is valid again.
            state.expired_reported = False
            state.vacant_since = None
            emit("lease_renewed", holder=new, **describe(self._match(component, new)))
        state.observation = current
        return events + self._verdict(component, now=now, wall=wall)

    def pod_seen(self, candidate: Candidate, *, now: float, wall: datetime) -> list[Event]:
        state = self._state[candidate.component]
        prev = state.candidates.get(candidate.name)
        state.candidates[candidate.name] = candidate
        events: list[Event] = []
        if self.started:
            base = describe(candidate)

            def emit(kind: str, /, **data: JsonValue) -> None:
                events.append(
                    Event(
                        kind=kind,
                        component=candidate.component,
                        at=now,
                        wall=wall,
                        data={**base, **data},
                    )
                )

            if prev is None or prev.uid != candidate.uid:
                emit("candidate_added", ready=candidate.ready)
            elif candidate.ready and not prev.ready:
                emit("candidate_ready", ready_since=_iso(candidate.ready_since))
            elif prev.ready and not candidate.ready:
                emit("candidate_not_ready")
            if candidate.terminating and (prev is None or not prev.terminating):
                emit("candidate_terminating")
        return events + self._verdict(candidate.component, now=now, wall=wall)

    def pod_gone(self, component: str, name: str, *, now: float, wall: datetime) -> list[Event]:
        state = self._state[component]
        prev = state.candidates.pop(name, None)
        events: list[Event] = []
        if prev is not None and self.started:
            events.append(
                Event(
                    kind="candidate_removed",
                    component=component,
                    at=now,
                    wall=wall,
                    data=describe(prev),
                )
            )
        return events + self._verdict(component, now=now, wall=wall)

    def guard_event_seen(self, event: GuardEvent, *, now: float, wall: datetime) -> list[Event]:
        """A guard's Event (it writes one per action): a new one, or one whose count
        grew, is a `guard_action`; those listed before `start` are history, not news."""
        state = self._state.get(event.component)
        if state is None:
            return []
        before = state.guard_counts.get(event.name)
        state.guard_counts[event.name] = event.count
        if not self.started or (before is not None and event.count <= before):
            return []
        data: dict[str, JsonValue] = {
            "action": event.reason.removeprefix("Guard"),
            "reason": event.reason,
            "node": event.node,
            "message": event.message,
            "event_time": _iso(event.time),
        }
        return [Event(kind="guard_action", component=event.component, at=now, wall=wall, data=data)]

    def lease_interrupted(self, component: str, *, now: float) -> None:
        """The Lease stream broke: until it is back we see no renewals."""
        state = self._state[component]
        if state.lease_blind_since is None:
            state.lease_blind_since = now
        state.last_interruption = now

    def lease_resumed(self, component: str) -> None:
        """The Lease stream is live again (what changed meanwhile arrives as events)."""
        self._state[component].lease_blind_since = None

    def tick(self, *, now: float, wall: datetime) -> list[Event]:
        """Let time pass: a lease unchanged for its duration expires (by our clock)."""
        events: list[Event] = []
        for component, state in self._state.items():
            obs = state.observation
            if obs is None or not obs.lease.held or state.expired_reported:
                continue
            if state.lease_blind_since is not None:
                continue  # we cannot see renewals: say nothing until we can
            until = obs.valid_until(default_duration_s=self.default_duration_s)
            if now < until:
                continue
            state.expired_reported = True
            state.vacant_since = until
            if self.started:
                events.append(
                    Event(
                        kind="lease_expired",
                        component=component,
                        at=now,
                        wall=wall,
                        data={
                            "holder": obs.lease.holder,
                            **describe(self._match(component, obs.lease.holder)),
                            "since_last_renew_s": _r(now - obs.reference),
                            "measured": self._measured(state, obs, now=now),
                        },
                    )
                )
            events += self._verdict(component, now=now, wall=wall)
        return events

    def next_deadline(self) -> float | None:
        """The earliest instant at which `tick` could report something."""
        deadlines = [
            s.observation.valid_until(default_duration_s=self.default_duration_s)
            for s in self._state.values()
            if s.observation is not None and s.observation.lease.held and not s.expired_reported
        ]
        return min(deadlines) if deadlines else None

    # --- helpers -------------------------------------------------------------
    def _match(self, component: str, holder: str | None) -> Candidate | None:
        if not holder:
            return None
        matches = match_holder(parse_identity(holder), self.candidates(component))
        return matches[0] if len(matches) == 1 else None

    def _previous_pod(self, component: str, holder: str | None) -> str | None:
        """The old holder's pod, even if it is gone by the time the new holder shows."""
        match = self._match(component, holder)
        if match is not None:
            return match.name
        last = self._state[component].last_leader
        if holder and last is not None and match_holder(parse_identity(holder), [last]):
            return last.name
        return None

    @staticmethod
    def _measured(state: _State, prev: Observation, *, now: float) -> bool:
        if prev.changed_at is None:
            return False
        return state.last_interruption is None or state.last_interruption < prev.reference

    def _change(
        self, component: str, prev: Observation, lease: LeaseRecord, *, now: float
    ) -> dict[str, JsonValue]:
        state = self._state[component]
        old = prev.lease.holder
        until = prev.valid_until(default_duration_s=self.default_duration_s)
        if state.vacant_since is not None:
            start: float | None = state.vacant_since
        elif old and now >= until:
            start = until
        elif not old:
            start = prev.first_seen
        else:
            start = None  # handed over while the old lease was still valid
        new_candidate = self._match(component, lease.holder)
        missed = None
        if lease.transitions is not None and prev.lease.transitions is not None:
            missed = max(0, lease.transitions - prev.lease.transitions - 1)
        return {
            "previous_holder": old,
            "previous_pod": self._previous_pod(component, old),
            "holder": lease.holder,
            **describe(new_candidate),
            "lease_gap_s": _r(max(0.0, now - start) if start is not None else 0.0),
            "since_last_renew_s": _r(now - prev.reference) if old else None,
            "measured": self._measured(state, prev, now=now),
            "transitions": lease.transitions,
            "missed_transitions": missed,
            "ready_since": _iso(new_candidate.ready_since) if new_candidate else None,
            "acquire_time": _iso(lease.acquire_time),
        }

    def _verdict(self, component: str, *, now: float, wall: datetime) -> list[Event]:
        state = self._state[component]
        a = self.assessment(component, now=now)
        if a.leader is not None:
            state.last_leader = a.leader
        if not self.started or a.verdict.value == state.verdict:
            return []
        previous, state.verdict = state.verdict, a.verdict.value
        return [
            Event(
                kind="verdict_changed",
                component=component,
                at=now,
                wall=wall,
                data={"previous": previous, "verdict": a.verdict.value, "reason": a.reason},
            )
        ]


def validity_text(obs: Observation | None, *, now: float, default_duration_s: float = 15.0) -> str:
    """How a human reads the validity: 'valid, changed 1.2s ago', 'unknown yet (3s seen)'."""
    if obs is None:
        return "no lease"
    v = obs.validity(now=now, default_duration_s=default_duration_s)
    if v is Validity.FREE:
        return "free (no holder)"
    ago = obs.since_change(now=now)
    if v is Validity.VALID and ago is not None:
        return f"valid, changed {ago:.1f}s ago"
    if v is Validity.EXPIRED:
        return f"expired ({now - obs.reference:.1f}s unchanged)"
    return f"unknown yet (watched {now - obs.first_seen:.1f}s)"


def flatten(batches: Iterable[list[Event]]) -> list[Event]:
    return [e for batch in batches for e in batch]
