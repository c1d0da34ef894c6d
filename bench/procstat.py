"""CPU accounting from /proc (Linux): per process and for the whole machine."""

from __future__ import annotations

import os
import resource
from dataclasses import dataclass

TICK = os.sysconf("SC_CLK_TCK")


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process (0.0 where /proc is unavailable)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICK
    except (OSError, IndexError, ValueError):
        return 0.0


def self_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@dataclass
class MachineCpu:
    busy: float
    total: float

    @classmethod
    def read(cls) -> MachineCpu:
        try:
            with open("/proc/stat") as f:
                values = [int(v) for v in f.readline().split()[1:]]
        except OSError:
            return cls(0.0, 0.0)
        idle = values[3] + (values[4] if len(values) > 4 else 0)
        total = float(sum(values[:8]))
        return cls(total - idle, total)

    def busy_fraction_since(self, earlier: MachineCpu) -> float:
        total = self.total - earlier.total
        return (self.busy - earlier.busy) / total if total > 0 else float("nan")
