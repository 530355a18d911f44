"""Whether this operator process still works: it can authenticate, and its watches deliver.

`/healthz` (kopf's liveness endpoint) runs a probe (handlers) that lists the EPDClusters it
serves: a 401/403 (the ServiceAccount or its token is gone, e.g. after `helm uninstall`) fails
it at once. The list also shows whether the watch stream still delivers: `WatchCheck` compares
each listed object's resourceVersion with the newest body the watch brought; an object the
list has and the watch has not caught up with for longer than `grace_s` means the watch is
lost (kopf keeps reconnecting a broken stream, but a stream that silently stalled, or one
refused with 401/403, never recovers). Pure: the caller passes the clock reading.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


def _newer(listed_rv: str, seen_rv: str | None) -> bool:
    if seen_rv is None:
        return True
    try:
        return int(listed_rv) > int(seen_rv)
    except ValueError:
        return listed_rv != seen_rv


@dataclass
class WatchCheck:
    grace_s: float = 60.0
    _behind_since: dict[str, float] = field(default_factory=dict)

    def observe(self, listed: Mapping[str, str], seen: Mapping[str, str | None],
                now: float) -> list[str]:
        """uids the watch has been behind on for longer than the grace period."""
        behind = {uid for uid, rv in listed.items() if _newer(rv, seen.get(uid))}
        for uid in list(self._behind_since):
            if uid not in behind:
                del self._behind_since[uid]
        for uid in behind:
            self._behind_since.setdefault(uid, now)
        return sorted(uid for uid, since in self._behind_since.items()
                      if now - since > self.grace_s)
