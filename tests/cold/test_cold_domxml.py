"""Domain XML rewrite for the destination, checked by parsing the result."""
import xml.etree.ElementTree as ET

import pytest

from labmig.cold.domxml import PathMap, domain_uuid, read_disks, read_networks, rewrite_for_host
from labmig.errors import InvalidInput

XML = """<domain type='qemu' id='7'>
  <name>g1</name>
  <uuid>11111111-2222-3333-4444-555555555555</uuid>
  <seclabel type='dynamic' model='dac'/>
  <os><type>hvm</type><kernel>/lab/h1/images/vmlinuz</kernel><initrd>/usr/share/x/initrd</initrd></os>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <disk type='file' device='disk'><driver name='qemu' type='raw'/>
      <source file='/lab/h1/images/g1 disk&amp;.img'/><target dev='vda' bus='virtio'/>
      <alias name='virtio-disk0'/></disk>
    <disk type='file' device='cdrom'><target dev='sda' bus='sata'/><readonly/></disk>
    <disk type='file' device='disk'><source file='/lab/shared/g1-data.img'/>
      <target dev='vdb'/></disk>
    <interface type='network'><source network='labnet'/><target dev='vnet3'/>
      <mac address='52:54:00:00:00:01'/></interface>
    <interface type='bridge'><source bridge='br0'/></interface>
    <serial type='file'><source path='/lab/h1/logs/g1.serial'/><target port='0'/></serial>
    <console type='pty'><log file='/lab/h1/logs/g1.console' append='on'/></console>
  </devices>
</domain>"""

PATHS = PathMap({"/lab/h1/images": "/lab/h2/images", "/lab/h1/logs/": "/lab/h2/logs"})


def test_reads_file_disks_and_networks():
    disks = read_disks(XML)
    assert [(d.target, d.path) for d in disks] == [("vda", "/lab/h1/images/g1 disk&.img"),
                                                    ("vdb", "/lab/shared/g1-data.img")]
    assert read_networks(XML) == {"network": ["labnet"], "bridge": ["br0"]}
    assert domain_uuid(XML) == "11111111-2222-3333-4444-555555555555"


def test_rewrite_maps_host_paths_and_drops_generated_parts():
    out = ET.fromstring(rewrite_for_host(XML, PATHS, networks={"labnet": "labnet2"}, emulator="/opt/qemu"))
    assert out.get("id") is None
    assert out.find("seclabel") is None
    assert not list(out.iter("alias"))
    assert out.findtext("os/kernel") == "/lab/h2/images/vmlinuz"
    assert out.findtext("os/initrd") == "/usr/share/x/initrd"          # not under a mapped dir
    sources = [d.find("source").get("file") for d in out.findall("devices/disk")
               if d.find("source") is not None]
    assert sources == ["/lab/h2/images/g1 disk&.img", "/lab/shared/g1-data.img"]  # shared path kept
    assert out.find("devices/interface/source").get("network") == "labnet2"
    assert out.find("devices/interface/target") is None
    assert out.find("devices/serial/source").get("path") == "/lab/h2/logs/g1.serial"
    assert out.find("devices/console/log").get("file") == "/lab/h2/logs/g1.console"
    assert out.findtext("devices/emulator") == "/opt/qemu"
    assert out.findtext("uuid") == "11111111-2222-3333-4444-555555555555"


def test_exact_disk_map_wins_and_odd_names_are_data_not_markup():
    evil = "/lab/h1/images/x'/><disk type='file'><source file='/etc/shadow"
    xml = XML.replace("g1 disk&amp;.img",
                      "x&apos;/&gt;&lt;disk type=&apos;file&apos;&gt;&lt;source file=&apos;/etc/shadow")
    assert read_disks(xml)[0].path == evil
    out = ET.fromstring(rewrite_for_host(xml, PATHS, disk_map={evil: "/lab/h2/images/safe.img"}))
    assert len(out.findall("devices/disk")) == 3
    assert out.find("devices/disk/source").get("file") == "/lab/h2/images/safe.img"


def test_prefix_must_match_whole_components():
    assert PathMap({"/lab/h1": "/lab/h2"}).map("/lab/h10/x") == "/lab/h10/x"
    assert PathMap({"/lab/h1": "/lab/h2"}).map("/lab/h1/x") == "/lab/h2/x"


def test_not_a_domain():
    with pytest.raises(InvalidInput):
        read_disks("<network/>")
    with pytest.raises(InvalidInput):
        read_disks("<domain")
