"""The coordinated rollout planner: per step, how many pods of each role run the new revision.

Pure arithmetic, no Kubernetes shapes (reconcile.partitions maps it onto StatefulSets).

Roles that roll move in lock-step. With `R` pods and `maxUnavailable` `u` a role needs
`ceil(R / u)` batches; the rollout has `K` = the largest of those over the rolling roles, and
at step `k` (0..K) role r runs `t_r(k) = ceil(k * R_r / K)` pods of the new revision. So:

- per step a role replaces at most `ceil(R_r / K) <= u_r` pods (its maxUnavailable holds);
- **the ratio bound**: at every step, for any two rolling roles a and b,
  `|t_a/R_a - t_b/R_b| < 1 / min(R_a, R_b)`: the share of each role on the new revision
  differs by less than one pod of the smaller role, so the E:P:D ratio within each revision
  stays the spec's ratio up to one pod per role;
- from step 1 on every rolling role has at least one pod on the new revision, so the new
  revision is complete (E, P and D) as soon as it exists; the last old pods go at step K.

A step is taken only when, for every rolling role, the previous one has settled (the
controller has seen the newest spec and every pod on the new revision is ready) and the pods
the step replaces may go: none of them is ready (replacing a broken pod costs no capacity,
so a fix to a broken rollout always goes through), or the role keeps at least
`R - maxUnavailable` ready pods without them. `paused` holds the current step. Pods never
move back: a target is never below what already runs the new revision, nor below what the
step already applied releases (the live partition), while the controller still replaces
those pods.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class RoleState:
    """One role as the planner sees it."""

    replicas: int  # the role's pod count (R)
    max_unavailable: int  # u >= 1
    updated: int  # pods on the new revision now
    settled: bool  # the controller has seen the newest spec; every new-revision pod is ready
    rolling: bool  # the role has a new revision to reach
    ready: frozenset[int] = frozenset()  # ordinals of the ready pods
    # Pods the step already applied releases to the new revision (replicas - the live
    # partition), whether or not the controller has replaced them yet.
    released: int = 0


@dataclass(frozen=True)
class RolloutPlan:
    step: int  # the step the targets belong to (0 = nothing moved yet)
    steps: int  # K
    done: int  # steps completed
    targets: dict[str, int]  # role -> pods wanted on the new revision (rolling roles only)

    @property
    def finished(self) -> bool:
        return self.done >= self.steps


def batches(replicas: int, max_unavailable: int) -> int:
    """Steps a role needs on its own: ceil(R / u)."""
    return -(-replicas // max(1, max_unavailable))


def target(replicas: int, step: int, steps: int) -> int:
    """t(k) = ceil(k * R / K): pods of a role with R pods on the new revision at step k."""
    if steps <= 0:
        return replicas
    return min(replicas, -(-step * replicas // steps))


def may_step(role: RoleState, step: int, steps: int) -> bool:
    """Whether `role` may move to `step`: settled, and the pods it replaces (the ordinals
    from R - t(step) up to the first updated one, as the StatefulSet controller picks them)
    are all unready, or enough ready pods stay."""
    if not role.settled:
        return False
    batch = range(
        role.replicas - target(role.replicas, step, steps),
        role.replicas - min(role.updated, role.replicas),
    )
    taken = sum(1 for o in batch if o in role.ready)
    ready = sum(1 for o in role.ready if o < role.replicas)
    return taken == 0 or ready - taken >= role.replicas - role.max_unavailable


def plan(roles: Mapping[str, RoleState], paused: bool = False) -> RolloutPlan:
    """The next step for the rolling roles in `roles` (others are left alone)."""
    rolling = {name: r for name, r in roles.items() if r.rolling}
    if not rolling:
        return RolloutPlan(step=0, steps=0, done=0, targets={})
    steps = max(batches(r.replicas, r.max_unavailable) for r in rolling.values())
    # The steps every rolling role has completed: the largest k with t(k) <= updated.
    done = min(
        max(k for k in range(steps + 1) if target(r.replicas, k, steps) <= r.updated)
        for r in rolling.values()
    )
    go = not paused and done < steps and all(may_step(r, done + 1, steps) for r in rolling.values())
    # A step once applied is never taken back, though its pods are still being replaced: a
    # higher partition would make the controller put a pod it just moved back on the old
    # revision (one more restart of an engine, and the roles out of lock-step).
    applied = min(
        max(k for k in range(steps + 1) if target(r.replicas, k, steps) <= r.released)
        for r in rolling.values()
    )
    step = max(done + 1 if go else done, applied)
    targets = {
        name: max(target(r.replicas, step, steps), min(max(r.updated, r.released), r.replicas))
        for name, r in rolling.items()
    }
    return RolloutPlan(step=step, steps=steps, done=done, targets=targets)
