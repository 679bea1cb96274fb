"""guest_info(): what the pre-checks read from a domain's XML."""
from labmig.live.prechecks import Check, PrecheckReport, guest_info
from labmig.live.plan import LivePlan
from labmig.errors import PrecheckFailed
import pytest

XML = """<domain type='qemu'>
  <name>g1</name><memory unit='KiB'>131072</memory>
  <os><type arch='x86_64' machine='pc-q35-7.2'>hvm</type></os>
  <cpu mode='custom' match='exact'><model fallback='forbid'>qemu64</model></cpu>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <disk type='file' device='disk'><driver name='qemu' type='qcow2'/>
      <source file='/var/lib/x/g1.qcow2'/><target dev='vda' bus='virtio'/></disk>
    <disk type='file' device='cdrom'><source file='/x.iso'/><target dev='sda'/></disk>
    <disk type='file' device='disk'><source file='/var/lib/x/ro.img'/><target dev='vdb'/><readonly/></disk>
    <interface type='network'><source network='labnet'/></interface>
    <interface type='bridge'><source bridge='br0'/></interface>
  </devices></domain>"""


def test_guest_info_reads_what_the_checks_need():
    g = guest_info(XML)
    assert g.memory == 128 * 2**20
    assert [(d.target, d.path, d.fmt, d.shared) for d in g.disks] == [
        ("vda", "/var/lib/x/g1.qcow2", "qcow2", False), ("vdb", "/var/lib/x/ro.img", "raw", True)]
    assert g.networks == [("network", "labnet"), ("bridge", "br0")]
    assert "qemu64" in g.cpu_xml and g.arch == "x86_64" and g.machine == "pc-q35-7.2"
    assert g.virt_type == "qemu" and g.emulator.endswith("qemu-system-x86_64")


def test_no_cpu_model_means_default():
    g = guest_info("<domain type='kvm'><memory>1024</memory><devices/></domain>")
    assert g.cpu_xml is None and g.disks == [] and g.memory == 1024 * 1024


def test_report_raises_with_every_line_and_the_first_hint():
    report = PrecheckReport(LivePlan("g1", "a", "b"))
    report.add(Check("VM running", True, "runs"))
    report.add(Check("networks", False, "b has no network named 'labnet'", "start it"))
    with pytest.raises(PrecheckFailed) as err:
        report.raise_if_failed()
    assert "labnet" in err.value.message and "[ok  ] VM running" in err.value.message
    assert err.value.hint == "start it"
