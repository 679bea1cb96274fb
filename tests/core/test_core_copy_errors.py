"""delta_copy and `labmig copy`: clear errors, the source never written, real devices and full disks."""
from __future__ import annotations

import errno
import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from labmig.blockcopy import LocalDestination, delta_copy, is_incomplete
from labmig.errors import CopyError, InvalidInput, SourceChanged, VerifyFailed

BS = 4096


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "labmig", "copy", *args], capture_output=True, text=True)


def test_missing_source(tmp_path):
    with pytest.raises(InvalidInput, match="does not exist") as info:
        delta_copy(tmp_path / "nope", tmp_path / "d")
    assert info.value.hint
    assert not (tmp_path / "d").exists()


def test_source_is_a_directory(tmp_path):
    with pytest.raises(InvalidInput, match="is a directory"):
        delta_copy(tmp_path, tmp_path / "d")


@pytest.mark.parametrize("link", ["same", "hardlink", "symlink"])
def test_same_file_is_refused_and_untouched(tmp_path, link):
    src = tmp_path / "s"
    data = os.urandom(5 * BS + 1)
    src.write_bytes(data)
    dst = tmp_path / "d"
    if link == "same":
        dst = src
    elif link == "hardlink":
        os.link(src, dst)
    else:
        dst.symlink_to(src)
    with pytest.raises(InvalidInput, match="same file"):
        delta_copy(src, dst)
    assert src.read_bytes() == data and not is_incomplete(src)


@pytest.mark.parametrize("bs", ["3KiB", "2KiB", "32MiB", "1000", "abc", "0"])
def test_bad_block_size(tmp_path, bs):
    (tmp_path / "s").write_bytes(b"x")
    with pytest.raises(InvalidInput):
        delta_copy(tmp_path / "s", tmp_path / "d", block_size=bs)
    assert not (tmp_path / "d").exists()


def test_bad_verify_mode(tmp_path):
    (tmp_path / "s").write_bytes(b"x")
    with pytest.raises(InvalidInput, match="verify"):
        delta_copy(tmp_path / "s", tmp_path / "d", verify="md5")


def test_destination_must_be_a_file_or_block_device(tmp_path):
    (tmp_path / "s").write_bytes(b"x")
    with pytest.raises(InvalidInput, match="not a regular file"):
        delta_copy(tmp_path / "s", "/dev/null")
    with pytest.raises(InvalidInput, match="is a directory"):
        delta_copy(tmp_path / "s", tmp_path)


def test_destination_directory_missing(tmp_path):
    (tmp_path / "s").write_bytes(b"x")
    with pytest.raises(InvalidInput, match="does not exist"):
        delta_copy(tmp_path / "s", tmp_path / "no" / "d")


def test_source_is_opened_read_only(tmp_path):
    src = tmp_path / "s"
    src.write_bytes(os.urandom(10 * BS))
    src.chmod(0o444)
    before = src.stat()
    delta_copy(src, tmp_path / "d", block_size=BS)
    after = src.stat()
    assert (before.st_mtime_ns, before.st_size) == (after.st_mtime_ns, after.st_size)
    assert (tmp_path / "d").read_bytes() == src.read_bytes()


class WritesToSource(LocalDestination):
    """A destination during whose copy something else writes the source (as a running VM would)."""

    def __init__(self, path, src: Path, when: str, at: int) -> None:
        super().__init__(path)
        self.src, self.when, self.at, self.done = src, when, at, False

    def _scribble(self) -> None:
        if not self.done:
            with open(self.src, "r+b") as f:
                f.seek(self.at)
                f.write(b"\xff" * 100)
            self.done = True

    def digests(self, offset, length, block_size, seed):
        out = super().digests(offset, length, block_size, seed)
        if self.when == "after-digests":
            self._scribble()
        return out


@pytest.mark.parametrize("at_changed_block", [True, False])
def test_source_written_during_copy_is_reported(tmp_path, at_changed_block):
    rng = random.Random(1)
    src, dst = tmp_path / "s", tmp_path / "d"
    data = bytearray(rng.randbytes(50 * BS))
    dst.write_bytes(data)
    data[10 * BS:11 * BS] = rng.randbytes(BS)  # block 10 will be sent
    src.write_bytes(data)
    at = 10 * BS + 7 if at_changed_block else 30 * BS
    with pytest.raises(SourceChanged) as info:
        delta_copy(src, WritesToSource(dst, src, "after-digests", at), block_size=BS)
    assert "changed" in str(info.value) or "modified" in str(info.value)
    assert is_incomplete(dst), "a destination copied from a changing source must not look complete"


class LosesOneWrite(LocalDestination):
    """Storage that acknowledges a write but keeps the old bytes (a lost write)."""

    def __init__(self, path, lost_offset: int) -> None:
        super().__init__(path)
        self.lost_offset = lost_offset

    def write(self, offset, data):
        if offset <= self.lost_offset < offset + len(data):
            self.written.add(offset, len(data))  # acknowledged, never stored
            return
        super().write(offset, data)


@pytest.mark.parametrize("verify", ["fast", "full", "sha256"])
def test_a_lost_write_is_caught_and_named(tmp_path, verify):
    """Every mode reads back what each window wrote before trusting it."""
    rng = random.Random(9)
    src, dst = tmp_path / "s", tmp_path / "d"
    data = bytearray(rng.randbytes(40 * BS))
    dst.write_bytes(data)
    for b in (3, 17, 30):
        data[b * BS:(b + 1) * BS] = rng.randbytes(BS)
    src.write_bytes(data)
    with pytest.raises(VerifyFailed) as info:
        delta_copy(src, LosesOneWrite(dst, 17 * BS), block_size=BS, verify=verify)
    assert f"{17 * BS:,}" in str(info.value)
    assert is_incomplete(dst)
    stats = delta_copy(src, dst, block_size=BS)  # a rerun sends what is still different
    assert stats.blocks_sent == 1 and dst.read_bytes() == bytes(data)


class FailingFinish(LocalDestination):
    def __init__(self, path) -> None:
        super().__init__(path)
        self.fsyncs = 0

    def finish(self):
        self.fsyncs += 1
        raise OSError(errno.EIO, "Input/output error")


def test_fsync_error_aborts_without_retry(tmp_path):
    (tmp_path / "s").write_bytes(os.urandom(3 * BS))
    dst = FailingFinish(tmp_path / "d")
    with pytest.raises(CopyError, match="I/O error") as info:
        delta_copy(tmp_path / "s", dst, block_size=BS)
    assert dst.fsyncs == 1
    assert "incomplete" in info.value.hint
    assert is_incomplete(tmp_path / "d")


@pytest.fixture
def small_fs(tmp_path):
    """A real 1 MiB tmpfs, to run out of space for real (needs root)."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {r.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


def test_no_space_on_destination_then_resume(tmp_path, small_fs):
    src = tmp_path / "s"
    src.write_bytes(os.urandom(3 << 20))
    with pytest.raises(CopyError, match="no space") as info:
        delta_copy(src, small_fs / "d", block_size=64 << 10)
    assert "resumes" in info.value.hint
    assert is_incomplete(small_fs / "d")
    r = run_cli(str(src), str(small_fs / "d2"))
    assert r.returncode == 1 and "no space left" in r.stderr and "hint:" in r.stderr
    # with room again, a rerun finishes the job
    subprocess.run(["mount", "-o", "remount,size=16m", str(small_fs)], check=True)
    stats = delta_copy(src, small_fs / "d", block_size=64 << 10)
    assert (small_fs / "d").read_bytes() == src.read_bytes()
    assert stats.blocks_sent < 48 and not is_incomplete(small_fs / "d")


@pytest.fixture
def loop_device(tmp_path):
    """A real block device: a loop device over a 4 MiB file (needs root and losetup)."""
    if shutil.which("losetup") is None:
        pytest.skip("losetup is not installed")
    backing = tmp_path / "backing"
    backing.write_bytes(os.urandom(4 << 20))
    r = subprocess.run(["losetup", "--find", "--show", str(backing)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot set up a loop device here: {r.stderr.strip()}")
    dev = r.stdout.strip()
    try:
        yield Path(dev), backing
    finally:
        subprocess.run(["losetup", "-d", dev], check=False)
        marks = Path(dev).with_name(f".{Path(dev).name}.incomplete")
        marks.unlink(missing_ok=True)


def test_block_devices_both_ways(tmp_path, loop_device):
    dev, backing = loop_device
    src = tmp_path / "s"
    src.write_bytes(os.urandom(3 << 20) + bytes(1 << 20) + os.urandom(1000))  # larger than the device
    with pytest.raises(CopyError, match="holds"):
        delta_copy(src, dev)
    src.write_bytes(os.urandom(2 << 20) + bytes(1 << 20) + os.urandom(1000))
    stats = delta_copy(src, dev, block_size=BS, verify="sha256")
    with open(dev, "rb") as f:
        assert f.read(src.stat().st_size) == src.read_bytes()
    assert stats.size == src.stat().st_size and not is_incomplete(dev)
    # and the device as a source, into a file
    out = tmp_path / "out"
    stats = delta_copy(dev, out, block_size=BS)
    assert stats.size == 4 << 20
    with open(dev, "rb") as f:
        assert out.read_bytes() == f.read()


def test_cli_json_stats_and_default_line(tmp_path):
    src, dst = tmp_path / "s", tmp_path / "d"
    src.write_bytes(os.urandom(20 * BS) + bytes(5 * BS))
    r = run_cli(str(src), str(dst), "--block-size", "4KiB", "--json")
    assert r.returncode == 0, r.stderr
    stats = json.loads(r.stdout)
    assert stats["blocks_total"] == 25 and stats["blocks_sent"] == 20 and stats["blocks_zero"] == 0
    assert stats["bytes_sent"] == 20 * BS and stats["throughput"] > 0 and stats["verify_digest"]
    assert dst.read_bytes() == src.read_bytes()
    r = run_cli(str(src), str(dst), "--block-size", "4KiB", "--stats")
    assert r.returncode == 0 and "25 matched" in r.stdout and "Bytes that would cross the wire" in r.stdout
    r = run_cli(str(src), str(dst))
    assert r.returncode == 0 and "verified" in r.stdout


@pytest.mark.parametrize("args,needle", [
    (["{tmp}/nope", "{tmp}/d"], "does not exist"),
    (["{tmp}", "{tmp}/d"], "is a directory"),
    (["{tmp}/s", "{tmp}/s"], "same file"),
    (["{tmp}/s", "{tmp}/d", "--block-size", "5KiB"], "power of two"),
])
def test_cli_errors(tmp_path, args, needle):
    (tmp_path / "s").write_bytes(b"data")
    r = run_cli(*[a.format(tmp=tmp_path) for a in args])
    assert r.returncode == 2 and needle in r.stderr and "hint" in r.stderr
    assert "Traceback" not in r.stderr


def test_copy_demo_runs_and_ends_identical(tmp_path):
    r = subprocess.run([sys.executable, "-m", "labmig.copydemo", "--size", "8MiB", "--dir", str(tmp_path)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "identical by cmp: yes" in r.stdout and "only what changed travels" in r.stdout
