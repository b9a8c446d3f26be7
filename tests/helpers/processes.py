"""Child processes of a run, and whether a process is still running."""

from __future__ import annotations

from pathlib import Path


# For the tests that kill processes and check what is left (Linux: they read /proc).
def child_pids(pid: int) -> list[int]:
    """The processes whose parent is `pid`."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(stat.parent.name))
        except (OSError, IndexError, ValueError):
            continue
    return found


def running(pid: int) -> bool:
    """Whether any thread of process `pid` has yet to exit. A process whose main thread has exited shows
    as a zombie while another of its threads still finishes (and still holds its files and locks)."""
    for stat in Path(f"/proc/{pid}/task").glob("*/stat"):
        try:
            if stat.read_text().rsplit(")", 1)[1].split()[0] not in ("Z", "X"):
                return True
        except (OSError, IndexError):
            continue
    return False
