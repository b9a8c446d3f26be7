"""Atomic outputs (`mmbert.io`) and process lifetimes (`mmbert.process`): whole directories, files that
other users can read as the umask says, stale temporaries of dead writers only, paths that stay inside
their root, outputs that never replace an input, one writer per directory, helpers that die with
their parent."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mmbert import io
from mmbert.model import MmBertForMaskedLM
from mmbert.process import LOCK_FILE, DirectoryInUseError, directory_lock
from mmbert.tokenizer import load_tokenizer, save_tokenizer
from mmbert.tokenizer_training import train_tokenizer
from tests.helpers.exports import udhr_texts
from tests.helpers.files import dir_with
from tests.helpers.model import TINY
from tests.helpers.processes import running


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def umask():
    """Set the process umask for a test (and put the old one back)."""
    old = os.umask(0o022)
    os.umask(old)

    def set_(mask: int) -> None:
        os.umask(mask)

    yield set_
    os.umask(old)


@pytest.mark.parametrize("mask", [0o022, 0o077, 0o002])
def test_outputs_honour_the_umask(tmp_path, umask, mask):
    umask(mask)
    io.atomic_write_text(tmp_path / "a.txt", "x")
    with io.atomic_dir(tmp_path / "d") as tmp:
        (tmp / "f").write_text("y")
    with io.update_dir(tmp_path / "d", keep=lambda name: True) as tmp:
        (tmp / "g").write_text("z")
    assert _mode(tmp_path / "a.txt") == 0o666 & ~mask
    assert _mode(tmp_path / "d") == 0o777 & ~mask
    assert _mode(tmp_path / "d" / "g") == 0o666 & ~mask


def test_atomic_dir_keeps_the_old_directory_until_the_new_one_is_in_place(tmp_path):
    out = tmp_path / "out"
    with io.atomic_dir(out) as tmp:
        (tmp / "v").write_text("1")
    with pytest.raises(RuntimeError), io.atomic_dir(out) as tmp:
        (tmp / "v").write_text("2")
        raise RuntimeError("killed half-way")
    assert (out / "v").read_text() == "1" and [p.name for p in tmp_path.iterdir()] == ["out"]
    with io.atomic_dir(out) as tmp:
        (tmp / "v").write_text("3")
        assert (out / "v").read_text() == "1"  # still the old one while the new one is built
    assert (out / "v").read_text() == "3" and [p.name for p in tmp_path.iterdir()] == ["out"]
    (tmp_path / "file").write_text("f")
    with (
        pytest.raises(NotADirectoryError, match="exists and is not a directory"),
        io.atomic_dir(tmp_path / "file"),
    ):
        pass
    assert (tmp_path / "file").read_text() == "f"


def test_stale_temporaries_of_dead_writers_only_are_removed(tmp_path):
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    dead_pid = int(dead.stdout)
    stale = tmp_path / f".out.{dead_pid}.abc123.tmp"
    live = tmp_path / f".out.{os.getpid()}.def456.tmp"
    other = tmp_path / f".other.{dead_pid}.aaa.tmp"
    for d in (stale, live, other):
        d.mkdir()
        (d / "big").write_bytes(b"\0" * 1000)
    (tmp_path / ".hidden.tmp").write_text("not ours")
    with io.atomic_dir(tmp_path / "out") as tmp:  # a new run of the killed writer cleans up first
        (tmp / "x").write_text("x")
    assert not stale.exists() and live.exists() and other.exists() and (tmp_path / ".hidden.tmp").exists()
    assert io.remove_stale_temps(tmp_path) == 1 and not other.exists() and live.exists()


def test_update_dir_replaces_a_writers_own_files_only(tmp_path):
    out = tmp_path / "model"
    with io.atomic_dir(out) as tmp:
        (tmp / "weights").write_text("w1")
        (tmp / "tok").write_text("t1")
        (tmp / "sub").mkdir()
        (tmp / "sub" / "f").write_text("s")
    with io.update_dir(out, keep=lambda name: name != "weights") as tmp:
        assert not (tmp / "weights").exists() and (tmp / "tok").read_text() == "t1"
        (tmp / "weights").write_text("w2")
        assert (out / "weights").read_text() == "w1"
    assert {p.name for p in out.iterdir()} == {"weights", "tok", "sub"}
    assert (out / "weights").read_text() == "w2" and (out / "sub" / "f").read_text() == "s"


@pytest.mark.parametrize("tokenizer_first", [False, True])
def test_model_and_tokenizer_saved_into_one_directory_in_either_order(tmp_path, tokenizer_first):
    tok = train_tokenizer(udhr_texts(("eng_Latn",)), vocab_size=400, model="bpe")
    model = MmBertForMaskedLM(TINY.replace(vocab_size=len(tok)))
    out = tmp_path / "export"
    steps = [lambda: save_tokenizer(tok, out), lambda: model.save_pretrained(out)]
    for step in steps if tokenizer_first else steps[::-1]:
        step()
    names = {p.name for p in out.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"} <= names
    MmBertForMaskedLM.from_pretrained(out)
    assert len(load_tokenizer(out)) == len(tok)
    # A second save replaces the weights of the first, in one step, and keeps the tokenizer.
    before = (out / "tokenizer.json").read_bytes()
    (out / "pytorch_model.bin").write_bytes(b"old weights in another layout")
    model.save_pretrained(out)
    assert not (out / "pytorch_model.bin").exists() and (out / "tokenizer.json").read_bytes() == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_paths_read_from_files_stay_inside_their_root(tmp_path):
    root = tmp_path / "data"
    root.mkdir()
    (tmp_path / "elsewhere").mkdir()
    (root / "link").symlink_to(tmp_path / "elsewhere")
    assert io.inside(root, "web/a.npy", "m.json") == (root / "web" / "a.npy").resolve()
    for bad in ("../elsewhere", "/etc", "", ".", "web/../..", "link"):
        with pytest.raises(io.UnsafePathError, match="m.json: .* is not a path inside"):
            io.inside(root, bad, "m.json")


def test_an_output_never_replaces_an_input_or_a_foreign_directory(tmp_path):
    model = dir_with(tmp_path / "model", "config.json", "{}")
    own = dir_with(tmp_path / "own", "mine.json", "{}")
    (tmp_path / "link").symlink_to(model)

    def is_own(d: Path) -> bool:
        return (d / "mine.json").exists()

    # An input, directly, through a parent or through a symbolic link: refused even with --overwrite.
    for out, inputs, message in [
        (model, [model], f"would overwrite the input {model}: choose another --out"),
        (tmp_path, [model], f"would overwrite the input {model}, which it holds"),
        (tmp_path / "link", [model], f"would overwrite the input {model}"),
        (model, [tmp_path / "link"], "would overwrite the input"),
    ]:
        for overwrite in (False, True, None):
            with pytest.raises(io.OutputRefusedError, match=message):
                io.check_output(out, inputs, is_own=is_own, overwrite=overwrite)
    # A foreign directory: refused unless --overwrite.
    with pytest.raises(io.OutputRefusedError, match="non-empty directory that this command did not write"):
        io.check_output(model, [], is_own=is_own, overwrite=False)
    io.check_output(model, [], is_own=is_own, overwrite=True)
    io.check_output(own, [model, "org/hub-name"], is_own=is_own, overwrite=False)
    io.check_output(tmp_path / "new", [model], is_own=is_own, overwrite=False)
    io.check_output(model / "inside", [model], is_own=is_own, overwrite=False)
    with pytest.raises(io.OutputRefusedError, match="choose another --out$"):
        io.check_output(model, [], is_own=is_own, overwrite=None)  # a command without --overwrite
    # A dangling symbolic link: said so, not "File exists".
    (tmp_path / "dangling").symlink_to(tmp_path / "gone")
    with pytest.raises(
        io.OutputRefusedError, match=f"is a symbolic link to {tmp_path / 'gone'}, which does not"
    ):
        io.check_output(tmp_path / "dangling", [], is_own=is_own, overwrite=True)


def test_a_full_disk_is_said_with_the_file_and_the_free_space(tmp_path, monkeypatch):
    """A write that fails on a full file system says so and where, whatever the writer's own words
    (NumPy: "N requested and M written"); the old file stays, no temporary is left."""
    target = tmp_path / "a.npy"
    target.write_bytes(b"old")
    monkeypatch.setattr(io, "_free_bytes", lambda directory: 0)
    for failure in (OSError("49601 requested and 24560 written"), RuntimeError("file write failed")):
        with pytest.raises(io.DiskFullError, match=f"no space left on device: could not write {target} "):
            with io.atomic_open(target) as f:
                f.write(b"partial")
                raise failure
        with pytest.raises(io.DiskFullError, match=f"0 bytes free in {tmp_path}"):
            with io.atomic_dir(tmp_path / "d") as d:
                (d / "x").write_bytes(b"partial")
                raise failure
    assert target.read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == ["a.npy"]
    # With room to spare, an error is the writer's own.
    monkeypatch.setattr(io, "_free_bytes", lambda directory: 10**12)
    with pytest.raises(RuntimeError, match="file write failed"):
        with io.atomic_open(target) as f:
            raise RuntimeError("file write failed")


# ---------------------------------------------------------------------------------------------- process
_HOLD = """
import sys, time
from mmbert.process import directory_lock
with directory_lock(sys.argv[1], "holder"):
    print("locked", flush=True)
    if sys.argv[2] == "fork":
        import os
        if os.fork() == 0:  # a child that outlives its parent must not keep the lock
            time.sleep(30)
            os._exit(0)
        os._exit(0)
    time.sleep(60)
"""


def _holder(directory: Path, mode: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    proc = subprocess.Popen(
        [sys.executable, "-c", _HOLD, str(directory), mode], env=env, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_directory_lock_names_its_holder_and_is_taken_over_when_it_is_gone(tmp_path, caplog):
    proc = _holder(tmp_path, "hold")
    try:
        with pytest.raises(DirectoryInUseError, match=rf"`holder` \(pid {proc.pid} on {os.uname().nodename}"):
            with directory_lock(tmp_path, "second"):
                pass
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert json.loads((tmp_path / LOCK_FILE).read_text())["pid"] == proc.pid  # a stale holder
    with caplog.at_level("INFO"), directory_lock(tmp_path, "third"):
        assert f"taking over the lock of `holder` (pid {proc.pid}" in caplog.text
        with pytest.raises(DirectoryInUseError, match="already being written by this process"):
            with directory_lock(tmp_path, "nested"):
                pass
    assert (tmp_path / LOCK_FILE).read_text() == ""  # released: no holder left behind


def test_a_forked_child_does_not_keep_the_lock(tmp_path):
    proc = _holder(tmp_path, "fork")
    proc.wait()
    with directory_lock(tmp_path, "next"):  # the parent is gone; its child still runs
        pass


_PARENT = """
import os, sys, time
from mmbert.process import die_with_parent
parent = os.getpid()
child = os.fork()
if child == 0:
    die_with_parent(parent)
    time.sleep(60)
    os._exit(0)
print(child, flush=True)
time.sleep(60)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_a_helper_process_dies_with_its_parent(sig):
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    proc = subprocess.Popen([sys.executable, "-c", _PARENT], env=env, stdout=subprocess.PIPE, text=True)
    child = int(proc.stdout.readline())
    time.sleep(0.2)  # let the child ask to be killed with its parent
    proc.send_signal(sig)
    proc.wait()
    deadline = time.monotonic() + 10
    while running(child):
        assert time.monotonic() < deadline, "the child outlived its parent"
        time.sleep(0.05)


def test_ctrl_c_inside_a_writer_is_reported_as_ctrl_c(tmp_path):
    """torch.save interrupted raises a RuntimeError from its zip writer while it unwinds."""

    class Writer:
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            raise RuntimeError("unexpected pos")

    with pytest.raises(KeyboardInterrupt), io.atomic_open(tmp_path / "ckpt.pt") as f, Writer():
        f.write(b"partial")
        raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []


def test_ctrl_c_during_an_atomic_write_is_delivered_after_it(tmp_path):
    """One Ctrl-C inside a write lands once the file is complete; a second one stops the write at once."""
    before = signal.getsignal(signal.SIGINT)
    done = tmp_path / "done.bin"
    with pytest.raises(KeyboardInterrupt):
        with io.atomic_open(done) as f:
            f.write(b"first half, ")
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)  # Python runs the handler here
            f.write(b"second half")
    assert done.read_bytes() == b"first half, second half"
    assert signal.getsignal(signal.SIGINT) is before

    stopped = tmp_path / "stopped.bin"
    with pytest.raises(KeyboardInterrupt):
        with io.atomic_open(stopped) as f:
            for _ in range(2):
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(0.05)
            f.write(b"never")
    assert not stopped.exists() and not list(tmp_path.glob(".*.tmp"))
    assert signal.getsignal(signal.SIGINT) is before
