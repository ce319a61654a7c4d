"""CPU seconds and peak resident memory of a running process, read from /proc (Linux).

Peak RSS is the kernel's high-water mark (VmHWM). reset_peak_rss() asks the kernel to restart it from the
current RSS (writing 5 to /proc/PID/clear_refs, allowed for our own children), so a peak read after a
benchmark cell is that cell's peak; where the reset is refused the peak covers the process's lifetime.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


@dataclass(frozen=True, slots=True)
class ProcSample:
    cpu_s: float
    peak_rss_bytes: int


def parse_stat_cpu(stat_line: str, clock_ticks: int = _CLOCK_TICKS) -> float:
    """User + system CPU seconds from the text of /proc/PID/stat (all threads of the process)."""
    fields = stat_line[stat_line.rindex(")") + 2 :].split()
    utime, stime = int(fields[11]), int(fields[12])  # fields 14 and 15 of stat(5), counted from pid = 1
    return (utime + stime) / clock_ticks


def parse_status_kb(status_text: str, field: str) -> int | None:
    """A "Field:   1234 kB" value of /proc/PID/status, in bytes."""
    for line in status_text.splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    return None


def cpu_seconds(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return parse_stat_cpu(f.read())
    except (OSError, ValueError, IndexError):
        return None


def peak_rss_bytes(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            return parse_status_kb(f.read(), "VmHWM")
    except (OSError, ValueError):
        return None


def reset_peak_rss(pid: int) -> bool:
    """Restart the peak RSS from the current RSS; False when the kernel refused."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False
