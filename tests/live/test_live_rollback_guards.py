"""Live rollback never destroys the copy that holds the guest's newest state.

In-memory hosts and domains stand in for libvirt; states and reasons are libvirt's own
constants (virDomainGetState). Followed behaviour:

- libvirt's post-copy: once switched, the source is paused with VIR_DOMAIN_PAUSED_POSTCOPY
  and the destination runs with VIR_DOMAIN_RUNNING_POSTCOPY; a broken post-copy leaves
  VIR_DOMAIN_PAUSED_POSTCOPY_FAILED, the memory split between the hosts. Nova's
  _rollback_live_migration is not called for a post-copy migration for this reason.
- libvirt's confirm phase failing after the destination resumed the guest: the source
  stays paused (VIR_DOMAIN_PAUSED_MIGRATION) or unreadable, the destination runs.
- Otherwise (pre-copy stopped before the switch-over: destination paused, incoming) the
  destination's copy is destroyed and undefined and the source resumed, as
  Nova's _rollback_live_migration does.
"""
from __future__ import annotations

from types import SimpleNamespace

import pytest

from labmig.live.rollback import Rollback

libvirt = pytest.importorskip("libvirt")


class Dom:
    def __init__(self, state, reason=0, readable=True):
        self._state, self.reason, self.readable, self.calls = state, reason, readable, []

    def state(self):
        if not self.readable:
            raise libvirt.libvirtError("cannot read the state")
        return [self._state, self.reason]

    def isActive(self):
        return self._state != libvirt.VIR_DOMAIN_SHUTOFF

    def isPersistent(self):
        return True

    def destroy(self):
        self.calls.append("destroy")
        self._state = libvirt.VIR_DOMAIN_SHUTOFF

    def undefine(self):
        self.calls.append("undefine")
        self.host.doms.pop("vm1", None)

    def resume(self):
        self.calls.append("resume")
        self._state, self.reason = libvirt.VIR_DOMAIN_RUNNING, 0


class Host:
    def __init__(self, name, dom):
        self.name, self.uri, self.doms = name, f"qemu+ssh://{name}/system", {"vm1": dom}
        dom.host = self

    def connect(self):
        return self

    def domain(self, vm):
        return self.doms.get(vm)

    def call(self, what, fn, *args, timeout=None):
        return fn(*args)


def rollback(src_dom, dst_dom):
    mig = SimpleNamespace(plan=SimpleNamespace(vm="vm1"), source=Host("src", src_dom),
                          destination=Host("dst", dst_dom), rollback_wait=0, _created_volumes=[])
    return Rollback(mig).run()


RUNNING, PAUSED = libvirt.VIR_DOMAIN_RUNNING, libvirt.VIR_DOMAIN_PAUSED


@pytest.mark.parametrize("src", [
    Dom(PAUSED, libvirt.VIR_DOMAIN_PAUSED_POSTCOPY),
    Dom(PAUSED, libvirt.VIR_DOMAIN_PAUSED_MIGRATION),
    Dom(PAUSED, libvirt.VIR_DOMAIN_PAUSED_MIGRATION, readable=False),
], ids=["source-paused-in-post-copy", "confirm-failed-source-paused", "source-unreadable"])
def test_a_running_destination_is_kept_when_the_source_does_not_run(src):
    dst = Dom(RUNNING, libvirt.VIR_DOMAIN_RUNNING_MIGRATED)
    verdict = rollback(src, dst)
    assert dst.calls == [] and src.calls == []               # nothing destroyed, source left as it is
    assert not verdict.ok and verdict.runs_on == "dst"
    assert "vm1 runs on dst" in verdict.message and "the migration ended on the destination" in verdict.message
    if src.readable and src.reason == libvirt.VIR_DOMAIN_PAUSED_POSTCOPY:
        assert "in post-copy" in verdict.message
    if not src.readable:
        assert "state unreadable" in verdict.message


def test_the_destination_running_in_post_copy_is_kept():
    """Recognised by the destination's reason, VIR_DOMAIN_RUNNING_POSTCOPY, even if labmig's switch call timed out."""
    src, dst = Dom(PAUSED, libvirt.VIR_DOMAIN_PAUSED_POSTCOPY), Dom(RUNNING, libvirt.VIR_DOMAIN_RUNNING_POSTCOPY)
    verdict = rollback(src, dst)
    assert dst.calls == src.calls == [] and verdict.runs_on == "dst" and "in post-copy" in verdict.message


def test_a_failed_post_copy_touches_neither_copy_and_says_memory_is_split():
    src, dst = Dom(PAUSED, libvirt.VIR_DOMAIN_PAUSED_POSTCOPY_FAILED), Dom(PAUSED, libvirt.VIR_DOMAIN_PAUSED_POSTCOPY_FAILED)
    verdict = rollback(src, dst)
    assert dst.calls == src.calls == []
    assert not verdict.ok and verdict.runs_on is None and "memory is split between src" in verdict.message


def test_a_pre_copy_stopped_before_the_switch_over_is_still_rolled_back():
    """The guard is narrow: an incoming, paused destination is removed and the source resumed."""
    src, dst = Dom(PAUSED, libvirt.VIR_DOMAIN_PAUSED_MIGRATION), Dom(PAUSED, libvirt.VIR_DOMAIN_PAUSED_MIGRATION)
    verdict = rollback(src, dst)
    assert dst.calls == ["destroy", "undefine"] and src.calls == ["resume"]
    assert verdict.ok and verdict.runs_on is None and verdict.message.startswith("Rolled back: vm1 runs on src")


class DeadHost(Host):
    def connect(self):
        from labmig.errors import LabmigError

        raise LabmigError("cannot reach host dst: Connection refused")


def test_a_dead_destination_daemon_is_said_at_once_not_after_the_wait():
    """Before, the first word of a dead destination libvirtd came when the 45 s wait for it
    ended; now the rollback says it as the first reconnect fails, then waits."""
    notes = []
    src = Dom(RUNNING)
    mig = SimpleNamespace(plan=SimpleNamespace(vm="vm1"), source=Host("src", src),
                          destination=DeadHost("dst", Dom(PAUSED, libvirt.VIR_DOMAIN_PAUSED_MIGRATION)),
                          rollback_wait=0, _created_volumes=[], note=lambda kind, words: notes.append((kind, words)))
    verdict = Rollback(mig).run()
    assert notes and notes[0][0] == "rollback"
    assert "dst's libvirt daemon does not answer (cannot reach host dst: Connection refused)" in notes[0][1]
    assert src.calls == [] and "vm1" in verdict.message


def test_block_migration_volumes_and_probe_pools_are_well_formed_xml_for_any_file_name(monkeypatch):
    """A disk named `disk&co.img` (legal in a file name) broke the volume XML built with an
    f-string; libvirt refused it with a parse error. The names are now XML-escaped."""
    import xml.etree.ElementTree as ET

    from labmig.live import rollback as rb
    from labmig.live.prechecks import Disk, GuestInfo

    made = []

    class Pool:
        def createXML(self, xml, flags):
            made.append(xml)

        def destroy(self):
            pass

    monkeypatch.setattr(rb.SharedStorageProbe, "pool_for", staticmethod(lambda host, d: (Pool(), False)))
    guest = GuestInfo(xml="", memory=0, disks=[Disk("vda", "/img/a&b <c>/disk&co.img", "raw", capacity=1)],
                      networks=[], cpu_xml=None, emulator=None, arch=None, machine=None, virt_type="kvm")
    created = rb.precreate_disks(Host("dst", Dom(RUNNING)), guest)
    assert [ET.fromstring(x).findtext("name") for x in made] == ["disk&co.img"]
    assert created[0].name == "disk&co.img"


def test_disks_made_for_a_block_migration_are_recorded_for_abort_while_the_run_lasts(tmp_path, monkeypatch):
    """A killed labmig left libvirt's job running; `labmig abort` ended it but the half-copied
    disk stayed on the destination and the next migration there failed ("exists already").
    The disks are now recorded beside the VM's lock for abort to find, and forgotten after."""
    from labmig.live.rollback import CreatedVolume, forget_created, read_created, record_created

    monkeypatch.setenv("LABMIG_LOCK_DIR", str(tmp_path))
    assert read_created("vm 1") is None
    record_created("vm 1", Host("dst", Dom(RUNNING)), [CreatedVolume("/img", "vm&1.img")])
    assert read_created("vm 1") == ("qemu+ssh://dst/system", [CreatedVolume("/img", "vm&1.img")])
    forget_created("vm 1")
    assert read_created("vm 1") is None
    forget_created("vm 1")                         # twice is fine
