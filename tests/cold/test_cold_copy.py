"""Delta copy to a helper process: byte-identical results, and only changed blocks on the wire."""
import filecmp
import os

import pytest

from labmig.errors import VerifyFailed
from labmig.remote.destination import remote_delta_copy
from labmig.remote.ssh import SshAgent, SshTarget

BS = 4096


@pytest.fixture
def setup(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    src = tmp_path / "src.img"
    src.write_bytes(os.urandom(64 * BS + 123))
    with SshAgent(SshTarget(address=None), [str(images)]) as agent:
        yield src, images, agent


def test_full_then_delta(setup):
    src, images, agent = setup
    s0 = agent.bytes_sent
    st = remote_delta_copy(str(src), agent, "d.img", block_size=BS)
    full = agent.bytes_sent - s0
    assert filecmp.cmp(src, images / "d.img", shallow=False)
    assert st["blocks_sent"] == st["blocks"] == 65 and full >= src.stat().st_size
    # change 3 blocks (one of them the short last block), copy again
    data = bytearray(src.read_bytes())
    for b in (2, 40, 64):
        data[b * BS] ^= 0xFF
    src.write_bytes(bytes(data))
    s1 = agent.bytes_sent
    st = remote_delta_copy(str(src), agent, "d.img", block_size=BS)
    delta = agent.bytes_sent - s1
    assert filecmp.cmp(src, images / "d.img", shallow=False)
    assert st["blocks_sent"] == 3
    changed = 2 * BS + 123
    assert changed <= delta <= changed + 2000, delta
    assert not (images / ".d.img.incomplete").exists()


def test_zero_blocks_become_holes_and_shrink(setup):
    src, images, agent = setup
    remote_delta_copy(str(src), agent, "z.img", block_size=BS)
    data = bytearray(src.read_bytes()[: 20 * BS])
    data[5 * BS: 9 * BS] = bytes(4 * BS)
    src.write_bytes(bytes(data))
    st = remote_delta_copy(str(src), agent, "z.img", block_size=BS)
    assert st["blocks_zero"] == 4 and st["blocks_sent"] == 0
    assert filecmp.cmp(src, images / "z.img", shallow=False)


def test_mismatch_at_verify_leaves_incomplete(setup):
    src, images, agent = setup

    def corrupt(done, total):
        if done == total:
            with open(images / "m.img", "r+b") as f:
                f.seek(7)
                f.write(b"\x00" if src.read_bytes()[7] else b"\x01")

    with pytest.raises(VerifyFailed) as info:
        remote_delta_copy(str(src), agent, "m.img", block_size=BS, on_progress=corrupt)
    assert "nothing was defined" in info.value.hint
    assert (images / ".m.img.incomplete").exists()
