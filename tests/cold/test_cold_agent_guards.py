"""The disk helper's guards, one finding each: a file replaced during a copy, a parent
directory swapped for a symlink, hard links, devices and FIFOs, requests out of order
or out of range, and frames that are not requests (the helper answers and stays up)."""
import os
import struct
import subprocess
import sys

import pytest
import xxhash

from labmig.remote.destination import copy_disk
from labmig.remote.protocol import MAX_PAYLOAD, read_frame, write_frame
from labmig.remote.ssh import AgentError

BS = 4096


@pytest.fixture
def agent(helper_dirs):
    return helper_dirs


def snapshot(d):
    return {p.name: (p.read_bytes() if not p.is_symlink() else os.readlink(p), p.lstat().st_mtime_ns)
            for p in sorted(d.iterdir())}


def test_a_file_renamed_over_the_image_during_a_copy_is_not_made_complete(agent):
    a, images, _ = agent
    data = os.urandom(2 * BS)
    a.call("open", path="d.img", size=len(data))
    a.call("write", data, path="d.img", offset=0)
    (images / "other").write_bytes(b"not the image".ljust(len(data), b"\0"))
    os.rename(images / "other", images / "d.img")      # the name now holds another file
    a.call("written_digest", path="d.img", block_size=BS, seed=1)   # reads the fd: it matches
    with pytest.raises(AgentError, match="replaced"):
        a.call("finish", path="d.img")
    assert a.call("stat", path="d.img")[0]["incomplete"] is True


def test_a_parent_swapped_for_a_symlink_touches_nothing_outside(agent):
    a, images, outside = agent
    (images / "sub").mkdir()
    (outside / "x.img").write_bytes(b"victim")
    (outside / ".x.img.incomplete").write_bytes(b"")
    before = snapshot(outside)
    data = os.urandom(BS)
    a.call("open", path="sub/x.img", size=len(data))
    a.call("write", data, path="sub/x.img", offset=0)
    a.call("verify", path="sub/x.img")
    os.rename(images / "sub", images / "sub.old")
    (images / "sub").symlink_to(outside)
    a.call("finish", path="sub/x.img")        # finishes the file it wrote, in the directory it opened
    for op, args in (("open", {"size": 1}), ("remove", {}), ("stat", {}), ("token", {"action": "create"})):
        with pytest.raises(AgentError, match="symlink is not followed"):
            a.call(op, path="sub/x.img", **args)
    assert snapshot(outside) == before
    assert (images / "sub.old" / "x.img").read_bytes() == data
    assert not (images / "sub.old" / ".x.img.incomplete").exists()


def test_hard_links_fifos_and_symlinks_are_refused(agent):
    a, images, outside = agent
    (outside / "victim").write_bytes(b"keep")
    os.link(outside / "victim", images / "h.img")
    os.mkfifo(images / "p.img")
    (images / "s.img").symlink_to(outside / "victim")
    before = snapshot(outside)
    for name, why in (("h.img", "hard links"), ("p.img", "not a regular file"), ("s.img", "symlink")):
        with pytest.raises(AgentError, match=why):
            a.call("open", path=name, size=4)
        assert not (images / f".{name}.incomplete").exists()
    assert snapshot(outside) == before
    assert a.call("stat", path="p.img")[0]["problem"].startswith("is not a regular file")


def test_requests_out_of_order_or_out_of_range_are_error_replies(agent):
    a, images, _ = agent
    with pytest.raises(AgentError, match="before it was opened"):
        a.call("write", b"x", path="w.img", offset=0)
    for op, args in (("zero", {"offset": 0, "length": 1}), ("finish", {}), ("verify", {}),
                     ("digests", {"block_size": BS, "seed": 0}), ("written_digest", {"block_size": BS, "seed": 0})):
        with pytest.raises(AgentError, match="before it was opened"):
            a.call(op, path="w.img", **args)
    assert not (images / "w.img").exists()
    for size in (-1, 1 << 63, "10", 1.5, True):
        with pytest.raises(AgentError, match="size"):
            a.call("open", path="w.img", size=size)
    a.call("open", path="w.img", size=2 * BS)
    with pytest.raises(AgentError, match="past the end"):
        a.call("write", b"x", path="w.img", offset=2 * BS)
    with pytest.raises(AgentError, match="out of range"):
        a.call("write", b"x", path="w.img", offset=1 << 63)
    with pytest.raises(AgentError, match="past the end"):
        a.call("zero", path="w.img", offset=BS, length=BS + 1)
    for bs in (0, 1, 3 * BS, 1 << 25):
        with pytest.raises(AgentError, match="block"):
            a.call("digests", path="w.img", block_size=bs, seed=0)
    with pytest.raises(AgentError, match="offset"):
        a.call("digests", path="w.img", block_size=BS, seed=0, offset=1 << 63)
    data = os.urandom(BS)
    a.call("write", data, path="w.img", offset=0)
    with pytest.raises(AgentError, match="not verified"):
        a.call("finish", path="w.img")
    a.call("written_digest", path="w.img", block_size=BS, seed=0)
    a.call("finish", path="w.img")
    with pytest.raises(AgentError, match="after finish"):
        a.call("write", b"y", path="w.img", offset=0)
    assert (images / "w.img").read_bytes() == data + bytes(BS)
    assert a.call("stat", path="w.img")[0]["incomplete"] is False


@pytest.mark.parametrize("verify", ["fast", "full", "sha256"])
def test_every_real_copy_passes_the_order_rules(agent, tmp_path, verify):
    """A first copy, a copy that changes nothing and an empty image, in each verify mode."""
    a, images, _ = agent
    src = tmp_path / "src.img"
    src.write_bytes(os.urandom(5 * BS) + bytes(3 * BS) + os.urandom(100))
    for _ in range(2):
        stats = copy_disk(str(src), a, "c.img", block_size=BS, verify=verify)
        assert (images / "c.img").read_bytes() == src.read_bytes()
    assert stats["blocks_sent"] == 0
    empty = tmp_path / "empty.img"
    empty.write_bytes(b"")
    copy_disk(str(empty), a, "e.img", block_size=BS, verify=verify)
    assert a.call("stat", path="e.img")[0] == {**a.call("stat", path="e.img")[0], "exists": True,
                                               "incomplete": False, "size": 0}


def _raw_helper(images):
    return subprocess.Popen([sys.executable, "-m", "labmig.remote.agent", "--image-dir", str(images)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, bufsize=0)


def _send_raw(proc, body, payload=b""):
    proc.stdin.write(struct.pack(">I", len(body)) + body + payload)
    frame = read_frame(proc.stdout)
    assert frame is not None
    return frame[0]


def test_frames_that_are_not_requests_get_error_replies(tmp_path):
    proc = _raw_helper(tmp_path)
    try:
        cases = [(b"[" * 100_000 + b"]" * 100_000, b""),           # deeper than the parser goes
                 (b'{"op": "hello", "x": ' + b"[" * 40 + b"]" * 40 + b"}", b""),   # deeper than requests go
                 (b"\xff\xfe not utf-8", b""), (b"[1, 2]", b""), (b'{"op": "hello", "payload": "7"}', b""),
                 (b'{"op": "write", "payload": %d}' % (MAX_PAYLOAD + 1), bytes(MAX_PAYLOAD + 1)),
                 (b'{"op": "hello", "n": 1' + b"0" * 5000 + b"}", b""),
                 (b'{"op": 7}', b""), (b'{"op": "__init__"}', b""), (b'{"op": "stat", "path": ["x"]}', b"")]
        for body, payload in cases:
            reply = _send_raw(proc, body, payload)
            assert reply["ok"] is False and reply["error"] and reply["hint"], body[:40]
        write_frame(proc.stdin, {"op": "hello"})
        assert read_frame(proc.stdout)[0]["ok"] is True
        proc.stdin.write(struct.pack(">I", 100) + b"{")          # cut in the middle of a frame
        proc.stdin.close()
        assert proc.wait(timeout=10) == 2
        err = proc.stderr.read().decode()
        assert "Traceback" not in err and "stream closed" in err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_the_digest_of_a_finished_copy_still_matches(agent, tmp_path):
    a, images, _ = agent
    src = tmp_path / "s.img"
    src.write_bytes(os.urandom(3 * BS))
    copy_disk(str(src), a, "s.img", block_size=BS, verify="fast")
    assert a.call("stat", path="s.img")[0]["incomplete"] is False
    assert xxhash.xxh3_128((images / "s.img").read_bytes()).hexdigest() == \
        xxhash.xxh3_128(src.read_bytes()).hexdigest()
