"""Shared storage taken for local: the same file as source and destination.

A copy onto the source itself is refused before anything is written, and
``confirm --delete-source-disks`` deletes nothing unless each destination copy exists,
is complete and is another file. Local helpers on pipes, real files in temp dirs.
"""
import os

import pytest

from labmig.cold import recovery as R
from labmig.cold.hostops import check_source_disks_deletable, execute_recovery
from labmig.cold.journal import JournalState
from labmig.cold.sides import ColdHost
from labmig.errors import InvalidInput, PrecheckFailed
from labmig.hosts import Host
from labmig.remote.destination import copy_disk
from labmig.remote.samefile import LocalView, same_file
from labmig.remote.ssh import SshAgent, SshTarget


def helper(d):
    return SshAgent(SshTarget(address=None), [str(d)])


def tokens_left(*dirs):
    return [p for d in dirs for p in os.listdir(d) if p.startswith(".labmig-token-")]


@pytest.fixture
def hosts(tmp_path):
    """Two image directories, one per host, and the source disk."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    dst.mkdir()
    (src / "d.img").write_bytes(os.urandom(64 * 1024))
    return src, dst


@pytest.mark.parametrize("alias", [False, True])
def test_a_copy_onto_its_own_source_is_refused_before_anything_is_written(hosts, tmp_path, alias):
    src, _ = hosts
    disk = src / "d.img"
    before = (disk.read_bytes(), disk.stat().st_mtime_ns)
    source = str(disk)
    if alias:   # the same directory under another name, as a shared mount would show it
        (tmp_path / "alias").symlink_to(src)
        source = str(tmp_path / "alias" / "d.img")
    with helper(src) as agent, pytest.raises(InvalidInput, match="same file"):
        copy_disk(source, agent, "d.img", block_size=4096)
    assert (disk.read_bytes(), disk.stat().st_mtime_ns) == before
    assert sorted(os.listdir(src)) == ["d.img"]


def test_the_token_alone_finds_one_directory_seen_from_two_machines(hosts):
    src, dst = hosts
    view = LocalView()
    view.boot_id = "another machine"          # inode numbers cannot be compared
    with helper(src) as same, helper(dst) as other:
        assert same_file(same, "d.img", view, str(src / "d.img")) == "same directory and name"
        assert same_file(other, "d.img", view, str(src / "d.img")) is None
        (dst / "d.img").write_bytes(b"another file")
        assert same_file(other, "d.img", LocalView(), str(src / "d.img")) is None
        assert same_file(same, "e.img", view, str(src / "d.img")) is None   # other names, other files
    assert tokens_left(src, dst) == []


def test_a_host_path_is_mapped_to_where_this_process_sees_it(hosts, tmp_path):
    src, _ = hosts
    view = LocalView(lambda p: p.replace("/var/lib/images", str(src)))
    with helper(src) as agent:
        assert same_file(agent, "d.img", view, "/var/lib/images/d.img") == "same inode"


def disks(src, dst):
    return [{"target": "vda", "src": str(src / "d.img"), "dst": str(dst / "d.img"), "kind": "local"}]


def test_deletion_needs_a_complete_copy_that_is_another_file(hosts):
    src, dst = hosts
    with helper(src) as s, helper(dst) as d:
        with pytest.raises(PrecheckFailed, match="does not exist"):
            check_source_disks_deletable(disks(src, dst), s, d)
        d.call("open", path="d.img", size=10)          # a copy that was never verified
        with pytest.raises(PrecheckFailed, match="incomplete"):
            check_source_disks_deletable(disks(src, dst), s, d)
        d.call("close", path="d.img")
        d.call("remove", path="d.img")
        (dst / "d.img").write_bytes((src / "d.img").read_bytes())
        check_source_disks_deletable(disks(src, dst), s, d)
    assert tokens_left(src, dst) == []


@pytest.mark.parametrize("boot", ["same kernel", "another machine"])
def test_deletion_refuses_the_source_disk_itself(hosts, tmp_path, boot):
    src, _ = hosts
    (tmp_path / "alias").symlink_to(src)
    with helper(src) as s, helper(tmp_path / "alias") as d:
        if boot != "same kernel":
            s.info["boot_id"] = "another machine"
        with pytest.raises(PrecheckFailed, match="itself") as info:
            check_source_disks_deletable(disks(src, tmp_path / "alias"), s, d)
        assert info.value.hint and "without --delete-source-disks" in info.value.hint
    assert (src / "d.img").exists()


def test_the_recovery_deletes_nothing_when_one_copy_is_missing(hosts, tmp_path):
    src, dst = hosts
    (src / "e.img").write_bytes(b"second disk")
    (dst / "d.img").write_bytes((src / "d.img").read_bytes())
    plan = {"vm": "vm1", "disks": disks(src, dst) + [{"target": "vdb", "src": str(src / "e.img"),
                                                      "dst": str(dst / "e.img"), "kind": "local"}]}
    side = lambda d: ColdHost(host=Host(name=d.name, uri="test:///default"), image_dirs=[str(d)])  # noqa: E731
    state = JournalState(vm="vm1", plan=plan)
    with pytest.raises(PrecheckFailed, match="vdb"):
        execute_recovery(R.RecoveryPlan("destination", [R.DELETE_SOURCE_DISKS]), state, side(src), side(dst))
    assert sorted(os.listdir(src)) == ["d.img", "e.img"]
    (dst / "e.img").write_bytes(b"second disk")
    execute_recovery(R.RecoveryPlan("destination", [R.DELETE_SOURCE_DISKS]), state, side(src), side(dst))
    assert os.listdir(src) == []


def test_two_disks_that_would_land_on_one_destination_file_are_refused():
    """`/a/vm.img` and `/b/vm.img` (two source image directories) both map to the destination's
    first image directory + `vm.img`: the second copy overwrote the first. Refused now, naming both."""
    from labmig.cold.migration import DiskMove, _refuse_one_destination_for_two_disks

    ok = [DiskMove("vda", "/a/vm.img", "/dst/vm.img", "local"), DiskMove("vdb", "/a/data.img", "/dst/data.img", "local")]
    _refuse_one_destination_for_two_disks(ok, "lab2")
    clash = [DiskMove("vda", "/a/vm.img", "/dst/vm.img", "local"), DiskMove("vdb", "/b/vm.img", "/dst/vm.img", "local")]
    with pytest.raises(PrecheckFailed, match=r"vda \(/a/vm.img\) and vdb \(/b/vm.img\) would both be copied to /dst/vm.img"):
        _refuse_one_destination_for_two_disks(clash, "lab2")
