"""How many CPUs this process may really use: its affinity mask, capped by a cgroup CPU quota.

A container limited to 2 CPUs on a 64-core host sees 64 CPUs in its affinity mask; starting 64
kernel threads there makes every run slower (the quota throttles them). Both cgroup v2
(`cpu.max`) and v1 (`cpu.cfs_quota_us` / `cpu.cfs_period_us`) are read; a missing or unlimited
quota leaves the affinity count.
"""

from __future__ import annotations

import math
import os
from functools import cache
from pathlib import Path

__all__ = ["available_cpus", "cgroup_cpu_limit"]

_CGROUP_ROOT = Path("/sys/fs/cgroup")


def cgroup_cpu_limit(root: Path = _CGROUP_ROOT) -> float | None:
    """The CPU quota of this process's cgroup in CPUs (e.g. 2.0, 1.5), or None when unlimited
    or unknown."""
    try:
        v2 = (root / "cpu.max").read_text().split()
        if v2 and v2[0] != "max":
            return int(v2[0]) / int(v2[1])
        if v2:
            return None
    except (OSError, ValueError, IndexError):
        pass
    try:
        quota = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period = int((root / "cpu" / "cpu.cfs_period_us").read_text())
        return quota / period if quota > 0 and period > 0 else None
    except (OSError, ValueError):
        return None


@cache
def available_cpus() -> int:
    """CPUs in the affinity mask, capped by the cgroup quota (rounded up), at least 1."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    limit = cgroup_cpu_limit()
    if limit is not None:
        cpus = min(cpus, max(1, math.ceil(limit)))
    return max(1, cpus)
