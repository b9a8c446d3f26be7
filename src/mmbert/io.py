"""Atomic outputs: a file or a directory is either absent, the old version, or the complete new one.

Every output of the project (checkpoints, exports, shards, reports, merged models) goes through these
helpers. A file is written to a temporary name in the same directory, flushed and fsynced, then
renamed over the target, and the directory is fsynced so that the rename itself survives a crash. A
directory is built under a temporary name beside the target and swapped in whole: on Linux with
`renameat2(RENAME_EXCHANGE)`, so the old directory stays in place until the new one has taken its
name; elsewhere the old one is moved aside just before the new one is renamed in.

`update_dir` rebuilds a directory that holds more than one writer's files (a model saved, then its
tokenizer saved beside it): the new directory starts with the entries the writer does not own, hard
linked from the old one, and is then swapped in whole like any other.

Temporary names are `.<name>.<pid>.<random>.tmp`: the writer's process id lets a later run remove the
leftovers of a killed writer (`remove_stale_temps`) without touching those of a live one. Files get
the permissions an ordinary `open()` would give them (0666 less the umask), not `mkstemp`'s 0600.

`inside(root, relative, where)` is the one check for a path read from a file (a manifest, a recipe, a
checkpoint): resolved, it must stay inside its root, or nothing is read, written or deleted there.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import re
import shutil
import signal
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO

from mmbert.errors import MmbertError
from mmbert.process import pid_alive

_TEMP_RE = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)\.[A-Za-z0-9_]+\.tmp$")


class UnsafePathError(MmbertError, ValueError):
    """A path read from a file leads outside the directory it must stay in."""


def inside(root: str | Path, relative: str | Path, where: str) -> Path:
    """`root / relative`, resolved (symbolic links and `..` followed); it must lie strictly inside `root`.

    `where` says where `relative` was read (a file and key) for the error, `UnsafePathError`.
    """
    base = Path(root).resolve()
    text = os.fspath(relative)
    path = (base / text).resolve()
    if not text or Path(text).is_absolute() or base not in path.parents:
        raise UnsafePathError(f"{where}: {text!r} is not a path inside {root}")
    return path


def _umask() -> int:
    """The process umask, read without changing it where /proc allows (setting it is not thread-safe)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def fsync_dir(directory: str | Path) -> None:
    """Make a rename inside `directory` durable (no-op where directories cannot be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _temp_prefix(path: Path) -> str:
    return f".{path.name}.{os.getpid()}."


@contextlib.contextmanager
def interrupts_deferred() -> Iterator[None]:
    """Hold a Ctrl-C back until the block is done, then deliver it; a second Ctrl-C goes through at once.

    torch.save's zip writer calls back into Python for every write: a KeyboardInterrupt raised inside one
    of those calls unwinds through its C++ code, and the writer has surfaced it as its own RuntimeError
    (`_raise_interrupt_behind`); the likely cause, too, of the one SIGABRT seen in the kill-and-rerun
    test instead of the command's "interrupted" line. Only in the main thread, where Python runs
    signal handlers.
    """
    previous = signal.getsignal(signal.SIGINT)
    if threading.current_thread() is not threading.main_thread() or previous is None:
        yield
        return
    pending: list[tuple] = []

    def hold(signum, frame):
        if pending:  # asked twice: stop now
            raise KeyboardInterrupt
        pending.append((signum, frame))

    signal.signal(signal.SIGINT, hold)
    try:
        yield
    except Exception as err:
        if pending:  # the block failed after a held Ctrl-C: the interrupt is what the user asked for
            raise KeyboardInterrupt from err
        raise
    finally:
        signal.signal(signal.SIGINT, previous)
    if pending:
        if callable(previous):
            previous(*pending[0])
        elif previous == signal.SIG_DFL:
            signal.raise_signal(signal.SIGINT)


@contextlib.contextmanager
def atomic_open(path: str | Path, mode: str = "wb") -> Iterator[IO]:
    """Open a temporary file next to `path`; on success it replaces `path`, on error it is removed.

    A Ctrl-C during the write is held back until the file is complete (`interrupts_deferred`)."""
    with interrupts_deferred():
        with _atomic_open(path, mode) as f:
            yield f


class DiskFullError(MmbertError, OSError):
    """A write that failed because the file system is full (or the quota is used up), saying where."""


# Free space under which a failed write is put down to a full disk even when the writer's error says
# nothing of it (NumPy reports a short write as "N requested and M written", torch's zip writer as
# "file write failed").
_NEARLY_FULL = 1 << 20


def _free_bytes(directory: Path) -> int | None:
    try:
        st = os.statvfs(directory)
    except (OSError, AttributeError):  # AttributeError: no statvfs (Windows)
        return None
    return st.f_bavail * st.f_frsize


def disk_full_error(err: BaseException, path: Path) -> DiskFullError | None:
    """`err`, raised while writing `path`, as a `DiskFullError` naming `path` and the free space left,
    when the file system is full; None when it is not the cause. Call it before the partial file is
    removed (that frees the space again)."""
    if not isinstance(err, Exception) or isinstance(err, DiskFullError):
        return None
    code = getattr(err, "errno", None)
    free = _free_bytes(path.parent)
    said = code in (errno.ENOSPC, errno.EDQUOT)
    unsaid = code is None and free is not None and free < _NEARLY_FULL  # a writer's own words
    if not (said or unsaid):
        return None
    where = f"{free:,} bytes free in {path.parent}" if free is not None else f"in {path.parent}"
    full = DiskFullError(f"no space left on device: could not write {path} ({where})")
    full.errno = errno.ENOSPC
    return full


@contextlib.contextmanager
def _atomic_open(path: str | Path, mode: str) -> Iterator[IO]:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(path), suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        full = disk_full_error(err, path)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        _raise_interrupt_behind(err)
        if full is not None:
            raise full from err
        raise
    fsync_dir(path.parent)


def _raise_interrupt_behind(err: BaseException) -> None:
    """Ctrl-C inside a writer can surface as the writer's own error (torch's zip writer raises a
    RuntimeError while it unwinds): an interrupt is reported as the interrupt it was."""
    if isinstance(err, KeyboardInterrupt):
        return
    cause = err.__context__
    while cause is not None:
        if isinstance(cause, KeyboardInterrupt):
            raise cause from None
        cause = cause.__context__


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_open(path, "wb") as f:
        f.write(data)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def _fsync_tree(root: Path) -> None:
    for directory, _, files in os.walk(root):
        for name in files:
            if os.path.islink(os.path.join(directory, name)):
                continue
            with open(os.path.join(directory, name), "rb") as f:
                os.fsync(f.fileno())
        fsync_dir(directory)


def _exchange(a: Path, b: Path) -> bool:
    """Swap two existing paths in one atomic step (Linux `renameat2`); False where unsupported."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
        return False  # an old kernel or a file system without the flag
    raise OSError(err, os.strerror(err), str(b))


def replace_dir(new: Path, target: Path) -> None:
    """Put the finished directory `new` at `target`, replacing (and then deleting) what was there."""
    if target.exists() or target.is_symlink():
        if not _exchange(new, target):
            aside = Path(tempfile.mkdtemp(prefix=_temp_prefix(target), suffix=".tmp", dir=target.parent))
            os.rename(target, aside / target.name)
            os.rename(new, target)
            new = aside
        fsync_dir(target.parent)
        shutil.rmtree(new)  # now the old directory
    else:
        os.rename(new, target)
        fsync_dir(target.parent)


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield an empty temporary directory beside `path`; on success it replaces `path` whole.

    On error (or a kill) `path` is untouched and the temporary directory is removed (or, after a
    kill, left for `remove_stale_temps`).
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise NotADirectoryError(f"{path}: exists and is not a directory")
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(path.parent, path.name)
    tmp = Path(tempfile.mkdtemp(prefix=_temp_prefix(path), suffix=".tmp", dir=path.parent))
    try:
        os.chmod(tmp, 0o777 & ~_umask())
        yield tmp
        _fsync_tree(tmp)
        replace_dir(tmp, path)
    except BaseException as err:
        full = disk_full_error(err, path)
        shutil.rmtree(tmp, ignore_errors=True)
        _raise_interrupt_behind(err)
        if full is not None:
            raise full from err
        raise


def _temp_owner(name: str) -> str:
    """The output a temporary name is for, through nested temporaries: a writer into a temporary
    directory (`update_dir` inside `atomic_dir`) names its own `..out.<pid>.<x>.tmp.<pid>.<y>.tmp`."""
    while (inner := _TEMP_RE.match(name)) is not None:
        name = inner["name"]
    return name


def remove_stale_temps(directory: str | Path, name: str | None = None, recursive: bool = False) -> int:
    """Delete the temporary files and directories of writers that died (their process is gone).

    Only this module's names (`.<name>.<pid>.<random>.tmp`) are touched, and only for `name` when
    given (its nested temporaries too: `_temp_owner`); a live writer's temporaries are kept. Returns
    how many were removed.
    """
    root = Path(directory)
    if not root.is_dir():
        return 0
    candidates = root.rglob(".*.tmp") if recursive else root.glob(".*.tmp")
    removed = 0
    for path in list(candidates):
        match = _TEMP_RE.match(path.name)
        if match is None or (name is not None and _temp_owner(match["name"]) != name):
            continue
        if pid_alive(int(match["pid"])):
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        removed += 1
    return removed


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:  # a file system without hard links, or another device
        shutil.copy2(src, dst)


@contextlib.contextmanager
def update_dir(path: str | Path, keep: Callable[[str], bool]) -> Iterator[Path]:
    """`atomic_dir(path)` whose temporary directory starts with the entries of the present `path` that
    `keep(name)` accepts (hard links where possible), so that a writer replaces its own files only and
    the directory still changes in one step."""
    path = Path(path)
    with atomic_dir(path) as tmp:
        if path.is_dir():
            for entry in path.iterdir():
                if _TEMP_RE.match(entry.name) or not keep(entry.name):
                    continue
                if entry.is_symlink():
                    os.symlink(os.readlink(entry), tmp / entry.name)
                elif entry.is_dir():
                    shutil.copytree(entry, tmp / entry.name, symlinks=True, copy_function=_link_or_copy)
                else:
                    _link_or_copy(str(entry), str(tmp / entry.name))
        yield tmp


class OutputRefusedError(MmbertError, FileExistsError):
    """An output that would overwrite one of the command's inputs, or a directory it did not write."""


def not_found(path: str | Path, want: str) -> str:
    """Why `path` is not the `want` ("recipe file", "model directory") a command reads, naming what
    is there instead: "no such file" for a directory sends a user looking in the wrong place."""
    path = Path(path)
    if path.is_symlink() and not path.exists():
        return f"{path}: a symbolic link to {os.readlink(path)}, which does not exist"
    if not path.exists():
        return f"{path}: no such {want}"
    return f"{path}: a {'directory' if path.is_dir() else 'file'}, not a {want}"


def check_output(
    out: str | Path,
    inputs: Iterable[str | Path | None],
    *,
    is_own: Callable[[Path], bool],
    overwrite: bool | None,
    option: str = "--out",
    file: bool = False,
    replaced: bool = False,
) -> None:
    """The one check of every command's output (a directory; with `file`, a file), before any work.

    Always refused, `--overwrite` or not: an output that is one of the command's `inputs` or holds
    one (replacing it would delete the input), symbolic links followed on both sides; a dangling
    symbolic link (nothing could be written through it); a place that cannot be written (read-only);
    a file where a directory goes, or the other way round; with `replaced` (the command replaces the
    directory whole, `atomic_dir`), one that is or holds the current directory (`--out .`: renaming
    onto it fails, after the work). Refused unless `overwrite`: a non-empty directory that `is_own` does not recognise as this
    command's earlier output. `overwrite` is the command's `--overwrite`; None: the command has no
    such option. An input that is not an existing path (a Hub name) is ignored.
    """
    path = Path(out)
    if path.is_symlink() and not path.exists():
        raise OutputRefusedError(
            f"{option} {out} is a symbolic link to {os.readlink(path)}, which does not exist: "
            f"create its target or choose another {option}"
        )
    target = path.resolve()
    for item in inputs:
        if item is None or not Path(item).exists():
            continue
        source = Path(item).resolve()
        if source == target or target in source.parents:
            how = "" if source == target else ", which it holds"
            raise OutputRefusedError(
                f"{option} {out} would overwrite the input {item}{how}: choose another {option} "
                "(--overwrite never replaces an input)"
            )
    cwd = Path.cwd().resolve()
    if replaced and (target == cwd or target in cwd.parents):
        # Replacing it would pull the working directory away (after the work: EBUSY on `.`).
        how = "the current directory" if target == cwd else "a directory holding the current one"
        raise OutputRefusedError(f"{option} {out} is {how}: choose another {option}")
    if target.exists() and target.is_dir() == file:
        wanted, found = ("file", "directory") if file else ("directory", "file")
        raise OutputRefusedError(
            f"{option} {out} is a {found}; a {wanted} goes there: choose another {option}"
        )
    advice = f"choose another {option}" + (", or pass --overwrite" if overwrite is not None else "")
    if not overwrite and target.is_dir() and any(target.iterdir()) and not is_own(target):
        raise OutputRefusedError(
            f"{option} {out} is a non-empty directory that this command did not write: {advice}"
        )
    _check_writable(target, out, option)


def _check_writable(target: Path, out: str | Path, option: str) -> None:
    """The directory `target` would be created or replaced in can be written (a read-only --out fails
    before the work, not after it)."""
    existing = target if target.is_dir() else target.parent
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not os.access(existing, os.W_OK | os.X_OK):
        raise OutputRefusedError(
            f"{option} {out}: {existing} is not writable (read-only): choose another {option}"
        )
