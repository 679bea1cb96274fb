"""Delta copy through the helper process: byte-identical results, only changed blocks on the wire."""
import filecmp
import os

import pytest

from labmig.errors import VerifyFailed
from labmig.remote.destination import copy_disk
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


@pytest.mark.parametrize("verify", ["full", "fast", "sha256"])
def test_full_then_delta(setup, verify):
    src, images, agent = setup
    st = copy_disk(str(src), agent, "d.img", block_size=BS, verify=verify)
    assert filecmp.cmp(src, images / "d.img", shallow=False)
    assert st["blocks_sent"] == st["blocks_total"] == 65
    assert st["wire_sent"] >= src.stat().st_size
    data = bytearray(src.read_bytes())
    for b in (2, 40, 64):  # three blocks change, one of them the short last block
        data[b * BS] ^= 0xFF
    src.write_bytes(bytes(data))
    st = copy_disk(str(src), agent, "d.img", block_size=BS, verify=verify)
    assert filecmp.cmp(src, images / "d.img", shallow=False)
    assert st["blocks_sent"] == 3
    changed = 2 * BS + 123
    # what really crossed: the changed bytes plus frames and 16-byte digests per block
    assert changed <= st["wire_sent"] + st["wire_received"] <= changed + 65 * 16 * 2 + 3000
    assert not (images / ".d.img.incomplete").exists()


def test_zero_blocks_become_holes_and_shrink(setup):
    src, images, agent = setup
    copy_disk(str(src), agent, "z.img", block_size=BS)
    data = bytearray(src.read_bytes()[: 20 * BS])
    data[5 * BS: 9 * BS] = bytes(4 * BS)
    src.write_bytes(bytes(data))
    st = copy_disk(str(src), agent, "z.img", block_size=BS)
    assert st["blocks_zero"] == 4 and st["blocks_sent"] == 0
    assert filecmp.cmp(src, images / "z.img", shallow=False)


def test_mismatch_at_verify_leaves_incomplete(setup):
    src, images, agent = setup

    def corrupt(done, total):
        if done == total:  # after the last extent, before the whole-image verification
            with open(images / "m.img", "r+b") as f:
                f.seek(7)
                f.write(bytes([src.read_bytes()[7] ^ 1]))

    with pytest.raises(VerifyFailed):
        copy_disk(str(src), agent, "m.img", block_size=BS, verify="full", on_progress=corrupt)
    assert (images / ".m.img.incomplete").exists()


def _delta_overhead(src, images, agent, changed_blocks, nblocks):
    data = bytearray(src.read_bytes())
    for b in changed_blocks:
        data[b * BS] ^= 0xFF
    src.write_bytes(bytes(data))
    calls0 = agent.calls
    st = copy_disk(str(src), agent, "o.img", block_size=BS, verify="fast")
    assert filecmp.cmp(src, images / "o.img", shallow=False)
    assert st["blocks_sent"] == len(changed_blocks)
    wire = st["wire_sent"] + st["wire_received"]
    return wire - len(changed_blocks) * BS - 16 * nblocks, agent.calls - calls0


def test_extents_travel_in_batches_a_few_bytes_each(tmp_path):
    """Bytes over the bound changed + 16 B per block do not grow with the number of extents
    but by a few bytes each, and the extents of a window go in one request, not one each."""
    images = tmp_path / "images"
    images.mkdir()
    src = tmp_path / "src.img"
    nblocks = 2048
    src.write_bytes(os.urandom(nblocks * BS))
    with SshAgent(SshTarget(address=None), [str(images)]) as agent:
        copy_disk(str(src), agent, "o.img", block_size=BS)
        few, few_calls = _delta_overhead(src, images, agent, range(0, nblocks, 400), nblocks)       # 6 extents
        many, many_calls = _delta_overhead(src, images, agent, range(1, nblocks, 20), nblocks)     # 103 extents
    assert few_calls == many_calls
    assert few < 2000
    assert many - few <= 4 * (103 - 6)
