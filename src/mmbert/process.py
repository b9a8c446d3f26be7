"""Process lifetimes and one writer per output directory.

- `die_with_parent(parent_pid)`: a helper process (a `prepare` worker, a `torchrun` rank) ends when
  the process that started it ends, however that one ended (SIGKILL included). On Linux the kernel
  sends SIGKILL on the parent's exit (`prctl(PR_SET_PDEATHSIG)`); elsewhere a thread polls the
  parent's id. Left running, such a process keeps writing, or sits in a collective for half an hour.
- `retain_freed_memory()`: glibc keeps the memory of freed tensors (up to 32 MiB each) for the next ones
  instead of handing it back to the kernel, so that each forward does not fault in and zero its
  activations' pages anew (mmBERT-small, 8 x 512 tokens, 2 threads: 18.7k page faults and 0.09 s of
  system time per forward without it, none and 0.04 s with it; `bench/inference.py` records both per
  row, `--no-retain-freed-memory` turns it off). Called by the commands that run models.
- `directory_lock(directory, command)`: at most one writer per output directory (`prepare`'s DATA,
  `train`'s run directories). It is a POSIX record lock (`fcntl.lockf`) on `DIRECTORY/.lock`; the file
  also holds the holder's pid, host, command and start time, which a refused writer names. The kernel
  drops the lock when its holder exits, however it exits, so the lock of a writer that is gone is
  simply taken over (the next holder says whose it was). A record lock, unlike `flock`, is not
  inherited by forked children: workers of a killed writer can never keep its directory locked.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import json
import logging
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mmbert.errors import MmbertError

logger = logging.getLogger(__name__)

LOCK_FILE = ".lock"
_PR_SET_PDEATHSIG = 1
_held: set[Path] = set()  # directories this process holds (a record lock does not refuse its own process)


class DirectoryInUseError(MmbertError, RuntimeError):
    """Another live process writes the directory; the message names it (pid, host, command)."""


def die_with_parent(parent_pid: int) -> None:
    """End this process (SIGKILL) as soon as `parent_pid`, its parent, exits; at once if it already has."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    else:
        threading.Thread(target=_watch_parent, args=(parent_pid,), daemon=True, name="watch-parent").start()
    # The parent may have exited before the request was made: then this process has another parent.
    if os.getppid() != parent_pid:
        os._exit(1)


# glibc's mallopt parameters (malloc.h) and the largest mmap threshold it accepts on 64-bit (HEAP_MAX_SIZE / 2).
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
MMAP_THRESHOLD = 32 * 2**20
TRIM_THRESHOLD = 2**30


def retain_freed_memory() -> bool:
    """Make glibc reuse freed blocks up to `MMAP_THRESHOLD` and keep up to `TRIM_THRESHOLD` of free heap;
    whether it applied (False off glibc). Process-wide: for processes that run a model again and again.

    By default glibc serves a large block with a fresh mmap and returns it to the kernel when freed (its
    threshold adapts, but the heap top is trimmed again past twice it), so the same activations fault
    their pages in, zeroed, at every forward.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
        mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    )


def _watch_parent(parent_pid: int) -> None:
    while os.getppid() == parent_pid:
        time.sleep(1.0)
    os._exit(1)


def pid_alive(pid: int) -> bool:
    """Whether process `pid` exists on this host (someone else's live process counts)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _describe(holder: dict[str, Any]) -> str:
    if not holder.get("pid"):
        return "another process"
    since = f", since {holder['started']}" if holder.get("started") else ""
    return f"`{holder.get('command', '?')}` (pid {holder['pid']} on {holder.get('host', '?')}{since})"


def _read_holder(fd: int) -> dict[str, Any]:
    try:
        holder = json.loads(os.pread(fd, 4096, 0).decode("utf-8") or "{}")
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return {}
    return holder if isinstance(holder, dict) else {}


@contextlib.contextmanager
def directory_lock(directory: str | os.PathLike, command: str) -> Iterator[Path]:
    """Hold `directory`'s lock for the block (creating the directory); yields the lock file's path.

    Raises `DirectoryInUseError` naming the holder when another live process (or this one, in an
    enclosing block) holds it.
    """
    root = Path(directory)
    root.mkdir(parents=True, exist_ok=True)
    key = root.resolve()
    path = root / LOCK_FILE
    if key in _held:
        raise DirectoryInUseError(f"{root} is already being written by this process")
    fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o666)
    try:
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            if err.errno not in (errno.EACCES, errno.EAGAIN):  # e.g. a file system without locks
                raise OSError(err.errno, f"cannot lock {path}: {err.strerror}") from None
            holder = _read_holder(fd)
            raise DirectoryInUseError(
                f"{root} is in use by {_describe(holder)}: wait for it to finish, or stop it "
                f"(a lock whose holder has exited is taken over by itself)"
            ) from None
        previous = _read_holder(fd)
        if previous.get("pid") and previous.get("pid") != os.getpid():
            logger.info("%s: taking over the lock of %s, which has exited", root, _describe(previous))
        me = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "command": command,
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(me) + "\n").encode("utf-8"), 0)
        _held.add(key)
        try:
            yield path
        finally:
            _held.discard(key)
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)  # an exited writer leaves no holder behind to be reported
    finally:
        os.close(fd)  # releases the record lock
