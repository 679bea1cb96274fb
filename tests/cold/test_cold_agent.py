"""The disk helper as a real process on pipes (ssh itself is exercised by the lab tests)."""
import hashlib
import os

import numpy as np
import pytest
import xxhash

from labmig.remote.ssh import AgentError, SshTarget


@pytest.fixture
def agent(helper_dirs):
    helper, images, _outside = helper_dirs
    return helper, images


def test_hello_reports_dirs_and_free_space(agent):
    a, images = agent
    assert a.info["image_dirs"] == [str(images.resolve())]
    assert a.info["free"][str(images.resolve())] > 0


def test_open_write_digest_finish_verify(agent):
    a, images = agent
    bs = 4096
    data = os.urandom(3 * bs + 100)
    a.call("open", path="d.img", size=len(data))
    assert a.call("stat", path="d.img")[0]["incomplete"] is True
    a.call("write", data[:bs], path="d.img", offset=0)
    a.call("write", data[bs:], path="d.img", offset=bs)
    reply, raw = a.call("digests", path="d.img", block_size=bs, seed=42)
    got = np.frombuffer(raw, dtype=np.uint64).reshape(-1, 2)
    for i in range(reply["nblocks"]):
        want = xxhash.xxh3_128_intdigest(data[i * bs:(i + 1) * bs], seed=42)
        assert (int(got[i, 0]) | (int(got[i, 1]) << 64)) == want
    a.call("zero", path="d.img", offset=bs, length=bs)
    expect = data[:bs] + bytes(bs) + data[2 * bs:]
    assert a.call("verify", path="d.img")[0]["digest"] == xxhash.xxh3_128(expect).hexdigest()
    a.call("finish", path="d.img")
    assert (images / "d.img").read_bytes() == expect
    st = a.call("stat", path="d.img")[0]
    assert st["incomplete"] is False and st["size"] == len(expect)
    assert a.call("verify", path="d.img", algo="sha256")[0]["digest"] == hashlib.sha256(expect).hexdigest()
    assert a.call("verify", path="d.img")[0]["digest"] == xxhash.xxh3_128(expect).hexdigest()
    assert a.call("remove", path="d.img")[0]["removed"] is True
    assert not (images / "d.img").exists()


def test_bytes_are_counted_both_ways(agent):
    a, _ = agent
    sent, received = a.bytes_sent, a.bytes_received
    payload = b"x" * 10000
    a.call("open", path="c.img", size=len(payload))
    a.call("write", payload, path="c.img", offset=0)
    assert a.bytes_sent - sent > len(payload)
    assert a.bytes_sent - sent < len(payload) + 400
    assert a.bytes_received > received


@pytest.mark.parametrize("name", ["../outside/x.img", "-oProxyCommand=x", "a/../../x", "/etc/passwd", ""])
def test_refusals_change_nothing(agent, tmp_path, name):
    a, images = agent
    with pytest.raises(AgentError) as info:
        a.call("open", path=name, size=10)
    assert info.value.hint
    assert list((tmp_path / "outside").iterdir()) == []
    assert a.call("hello")[0]["pid"]  # the helper survives a refusal


def test_symlink_swapped_in_is_not_followed(agent, tmp_path):
    a, images = agent
    target = tmp_path / "outside" / "victim"
    target.write_bytes(b"keep")
    (images / "evil.img").symlink_to(target)
    with pytest.raises(AgentError, match="symlink"):
        a.call("open", path="evil.img", size=1)
    assert target.read_bytes() == b"keep"


def test_unknown_op_and_bad_netdev(agent):
    a, _ = agent
    with pytest.raises(AgentError, match="unknown operation"):
        a.call("format-disk")
    assert a.call("netdev", name="lo")[0]["exists"] is True
    assert a.call("netdev", name="nosuchdev0")[0]["exists"] is False
    with pytest.raises(AgentError):
        a.call("netdev", name="../x")


def test_no_shell_string_from_data():
    t = SshTarget(address="10.0.0.2", identity="/k", python="/opt/py thon")
    argv = t.argv(t.helper_argv(["/img dir; rm -rf /"]))
    assert argv[0] == "ssh" and "--" in argv
    # The one remote string is made of quoted words from the host's configuration.
    assert argv[-1] == "'/opt/py thon' -m labmig.remote.agent --image-dir '/img dir; rm -rf /'"


def test_extents_request_writes_zeroes_and_refuses_bad_tables(agent):
    """Many extents in one request (protocol.pack_extents); a bad table is an error reply, the helper stays up."""
    from labmig.remote.protocol import pack_extents

    a, images = agent
    bs = 4096
    a.call("open", path="e.img", size=10 * bs + 7)
    first, last = os.urandom(2 * bs), os.urandom(bs + 7)
    extents = [(6 * bs, 2 * bs, True), (1 * bs, 2 * bs, False), (9 * bs, bs + 7, False)]
    table = pack_extents(extents, bs)
    reply, _ = a.call("extents", table + first + last, path="e.img", unit=bs, table=len(table))
    assert reply["extents"] == 3
    content = (images / "e.img").read_bytes()
    assert content[bs:3 * bs] == first and content[9 * bs:] == last and content[6 * bs:8 * bs] == bytes(2 * bs)
    bad = [(pack_extents([(20 * bs, bs, False)], bs), os.urandom(bs)),      # past the end of the image
           (pack_extents([(0, bs, False)], bs), os.urandom(bs - 1)),        # data short of the table
           (b"\xff" * 12, b""),                                             # a number that never ends
           (b"\x80", b"")]                                                  # a table cut short
    for table, data in bad:
        with pytest.raises(AgentError, match="extent"):
            a.call("extents", table + data, path="e.img", unit=bs, table=len(table))
    with pytest.raises(AgentError):
        a.call("extents", b"", path="e.img", unit=0, table=0)
    assert (images / "e.img").read_bytes() == content
    assert a.call("hello")[0]["ok"]


@pytest.mark.parametrize("unit", [1, 4096, 65536])
def test_extent_table_round_trip(unit):
    """pack_extents → unpack_extents gives the extents back, in any order, ragged last blocks included."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from labmig.remote.protocol import pack_extents, unpack_extents

    limit = unit * 10_000 + 123
    extent = st.tuples(st.integers(0, 9_999), st.integers(1, 50), st.booleans(), st.integers(0, unit - 1))

    @settings(max_examples=200, deadline=None)
    @given(st.lists(extent, max_size=40))
    def check(raw):
        extents = []
        for block, nunits, zero, short in raw:
            offset = block * unit
            length = min(nunits * unit - short, limit - offset)
            extents.append((offset, length, zero))
        table = pack_extents(extents, unit)
        assert unpack_extents(table, unit, limit) == extents
        assert len(table) <= 20 * len(extents)

    check()


def test_a_helper_that_stops_answering_fails_the_call_at_its_deadline(helper_dirs):
    """A helper frozen mid-session (as behind a link that drops packets without closing)
    fails the call after ``call_timeout`` with the op named, and is stopped: nothing waits forever."""
    import signal
    import time

    a, _images, _ = helper_dirs
    a.call_timeout = 1.5
    os.kill(a._proc.pid, signal.SIGSTOP)
    started = time.monotonic()
    with pytest.raises(AgentError, match="did not answer 'stat' within 2 s"):
        a.call("stat", path="x.img")
    assert 1.4 < time.monotonic() - started < 10
    with pytest.raises(AgentError, match="not running"):
        a.call("hello")


def test_a_frozen_helper_cannot_hold_a_large_write_past_its_deadline(helper_dirs):
    """The deadline covers sending too: a payload larger than the pipe can hold is not sent
    to a helper that reads nothing, and the call ends at its deadline."""
    import signal
    import time

    a, _images, _ = helper_dirs
    a.call("open", path="w.img", size=8 << 20)
    a.call_timeout = 1.5
    os.kill(a._proc.pid, signal.SIGSTOP)
    started = time.monotonic()
    with pytest.raises(AgentError, match="did not answer 'write'"):
        a.call("write", os.urandom(8 << 20), path="w.img", offset=0)
    assert time.monotonic() - started < 10


def test_ssh_sends_keepalives_and_gives_up_on_a_dead_link():
    """ssh's ServerAliveInterval/CountMax end a session whose link is cut (about 15-20 s)."""
    argv = SshTarget(address="lab2").argv(["python3", "-m", "labmig.remote.agent"])
    assert "ServerAliveInterval=5" in argv and "ServerAliveCountMax=3" in argv
    assert "ServerAliveInterval=5" not in SshTarget(address="lab2", keepalive_interval=0).argv(["true"])
