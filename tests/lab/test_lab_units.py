"""Pure logic of the lab: names, paths, XML, console parsing, cpio, module order (no root, no lab)."""
import stat
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from labmig.errors import InvalidInput, LabError
from labmig.lab.faults import FAULTS
from labmig.lab.guest import ConsoleLog, GuestSpec, create_disk, domain_xml, read_boot_counter
from labmig.lab.guestbuild import load_order, module_depends, write_cpio
from labmig.lab.layout import lab_name, make_layout


def test_every_name_derives_from_the_lab_name():
    a, b = make_layout("alpha"), make_layout("beta")
    names_a = {a.client_netns, str(a.run_dir), str(a.state_dir)} | {h.netns for h in a.hosts} | {h.uri for h in a.hosts}
    names_b = {b.client_netns, str(b.run_dir), str(b.state_dir)} | {h.netns for h in b.hosts} | {h.uri for h in b.hosts}
    assert not names_a & names_b
    assert all("alpha" in n for n in names_a)


def test_lab_name_from_environment(monkeypatch):
    monkeypatch.setenv("LABMIG_LAB", "ci2")
    assert lab_name() == "ci2"
    assert make_layout().hosts[0].netns == "ci2-lab1"
    monkeypatch.delenv("LABMIG_LAB")
    assert lab_name() == "labmig"


@pytest.mark.parametrize("bad", ["Lab", "1lab", "lab-1", "a" * 13, "la b"])
def test_bad_lab_names_are_refused(bad):
    with pytest.raises(InvalidInput) as err:
        lab_name(bad)
    assert err.value.hint


def test_hosts_differ_where_libvirt_needs_them_to():
    h1, h2 = make_layout("x").hosts
    assert h1.host_uuid != h2.host_uuid
    assert h1.link_addr != h2.link_addr
    assert h1.migration_uri == f"qemu+tcp://{h1.link_addr}/system"
    # Stable across calls: a restarted daemon keeps its identity.
    assert make_layout("x").hosts[0].host_uuid == h1.host_uuid


def test_inside_paths_map_to_per_host_directories():
    layout = make_layout("x")
    h1, h2 = layout.hosts
    assert h1.outside("/var/lib/libvirt/images/a.img") == h1.state_dir / "lib-libvirt" / "images" / "a.img"
    assert h1.outside("/run/libvirt/qemu/g.pid") == h1.run_dir / "run-libvirt" / "qemu" / "g.pid"
    assert h1.outside("/var/lib/libvirt/images/a.img") != h2.outside("/var/lib/libvirt/images/a.img")
    shared = layout.shared_dir / "g.img"
    assert h1.outside(shared) == h2.outside(shared) == shared


def test_unknown_host_is_a_clear_error():
    with pytest.raises(InvalidInput, match="lab3"):
        make_layout("x").host("lab3")


def test_domain_xml_has_what_libvirt_and_migration_need():
    layout = make_layout("x")
    spec = GuestSpec(name="g", index=4, dirty_rate=5 * 2**20, wss=32 * 2**20)
    root = ET.fromstring(domain_xml(layout, spec, "/d/g.img", "/var/log/libvirt/console/g.log"))
    assert root.get("type") == "qemu"
    assert root.find("features/acpi") is not None
    assert root.find("devices/disk/driver").get("cache") == "none"
    assert root.find("devices/interface/source").get("bridge") == "br0"
    cmdline = root.findtext("os/cmdline")
    assert f"labmig.dirty={5 * 2**20}" in cmdline and f"labmig.wss={32 * 2**20}" in cmdline
    assert "labmig.ip=10.78.0.14/24" in cmdline
    assert root.find("devices/interface/mac").get("address").endswith(":04")


@pytest.mark.parametrize("kwargs", [dict(name="1bad"), dict(index=0), dict(disk="nfs"),
                                    dict(memory=64 * 2**20), dict(memory=256 * 2**20, wss=200 * 2**20)])
def test_guest_spec_validation(kwargs):
    with pytest.raises(InvalidInput):
        GuestSpec(**kwargs).validate()


def test_disk_boot_counter_round_trip(tmp_path):
    disk = tmp_path / "g.img"
    create_disk(disk, 4 * 2**20, boot_count=7)
    assert read_boot_counter(disk) == 7
    assert disk.stat().st_size == 4 * 2**20
    with pytest.raises(LabError):          # never overwrites an existing disk
        create_disk(disk, 4 * 2**20)
    other = tmp_path / "other"
    other.write_bytes(b"x" * 64)
    with pytest.raises(LabError):
        read_boot_counter(other)


def test_console_log_parsing():
    text = "\r\n".join([
        "SeaBIOS", "LABMIG BOOTED ip=10.78.0.11/24",
        "LABMIG READY name=g boot=3 wss=1024 dirty=0 port=7777",
        "LABMIG HB seq=1 up=1.0 dirty=0 wss=1024 errors=0 rounds=0 boot=3",
        "LABMIG MEMERR page=5 word=0 expected=0000000200000005 got=0000000100000005",
        "LABMIG HB seq=2 up=2.0 dirty=0 wss=1024 errors=1 rounds=1 boot=3",
    ])
    log = ConsoleLog.parse(text)
    assert log.boot_count == 3
    assert [hb["seq"] for hb in log.heartbeats] == ["1", "2"]
    assert log.reported_errors == 1 and log.memory_errors[0].startswith("LABMIG MEMERR page=5")
    assert ConsoleLog.parse("[ 1.0] Kernel panic - not syncing").panics


def test_cpio_is_readable_by_busybox(tmp_path):
    busybox = Path("/bin/busybox")
    if not busybox.exists():
        pytest.fail("busybox-static is part of the lab packages; run make setup")
    data = write_cpio([
        ("bin", stat.S_IFDIR | 0o755, b"", None),
        ("bin/hello", stat.S_IFREG | 0o755, b"#!/bin/sh\necho hi\n", None),
        ("dev/console", stat.S_IFCHR | 0o600, b"", (5, 1)),
        ("odd", stat.S_IFREG | 0o644, b"abc", None),   # 3 bytes: exercises the 4-byte padding
    ])
    listing = subprocess.run([str(busybox), "cpio", "-t"], input=data, capture_output=True, check=True).stdout.decode()
    assert listing.split() == ["bin", "bin/hello", "dev/console", "odd"]
    out = tmp_path / "x"
    out.mkdir()
    subprocess.run([str(busybox), "cpio", "-i", "-d", "bin/hello", "odd"], input=data, cwd=out, check=True,
                   capture_output=True)
    assert (out / "bin" / "hello").read_bytes() == b"#!/bin/sh\necho hi\n"
    assert (out / "odd").read_bytes() == b"abc"


def test_module_load_order_puts_dependencies_first(tmp_path):
    def ko(name, deps):
        p = tmp_path / f"{name}.ko"
        p.write_bytes(b"\x7fELF junk\0license=GPL\0depends=" + ",".join(deps).encode() + b"\0vermagic=6.1\0")
        return p
    mods = {"a": ko("a", ["b", "c"]), "b": ko("b", ["c"]), "c": ko("c", []), "d": ko("d", [])}
    assert module_depends(mods["a"].read_bytes()) == ["b", "c"]
    assert load_order(("a", "d"), mods) == ["c", "b", "a", "d"]
    with pytest.raises(LabError, match="lacks module"):
        load_order(("zz",), mods)


def test_fault_registry_names_and_parameters():
    assert {"link-cut", "link-restore", "link-slow", "kill-libvirtd", "kill-qemu", "fill-disk"} <= set(FAULTS)
    assert FAULTS["kill-qemu"].params == ["host", "domain"]
    assert FAULTS["link-cut"].params == []


def test_kvm_guests_pass_the_host_cpu_through():
    layout = make_layout("x")
    kvm = ET.fromstring(domain_xml(layout, GuestSpec(), "/d", "/c", "kvm"))
    tcg = ET.fromstring(domain_xml(layout, GuestSpec(), "/d", "/c", "qemu"))
    assert kvm.get("type") == "kvm" and kvm.find("cpu").get("mode") == "host-passthrough"
    assert tcg.find("cpu") is None


def test_disk_cache_falls_back_where_direct_io_is_missing(tmp_path):
    from labmig.lab.guest import supports_direct_io

    layout = make_layout("x")
    direct = ET.fromstring(domain_xml(layout, GuestSpec(), "/d", "/c", direct_io=True))
    plain = ET.fromstring(domain_xml(layout, GuestSpec(), "/d", "/c", direct_io=False))
    assert direct.find("devices/disk/driver").get("cache") == "none"
    assert plain.find("devices/disk/driver").get("cache") is None
    assert supports_direct_io(tmp_path / "missing-dir") is False
    assert isinstance(supports_direct_io(tmp_path), bool)
    assert list(tmp_path.iterdir()) == []   # the probe file is not left behind


def test_old_guest_builds_are_pruned(tmp_path):
    import os as _os

    from labmig.lab.guestbuild import _prune

    dirs = []
    for i in range(5):
        d = tmp_path / f"b{i}"
        d.mkdir()
        (d / "manifest.json").write_text("{}")
        _os.utime(d, (1000 + i, 1000 + i))
        dirs.append(d)
    (tmp_path / "half-built").mkdir()                 # no manifest: another build in progress
    _prune(tmp_path, keep=dirs[0], count=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b0", "b3", "b4", "half-built"]


def test_qemu_7_is_refused_for_tcg_guests(tmp_path, monkeypatch):
    from labmig.lab.local import _check_qemu

    fake = tmp_path / "qemu-system-x86_64"
    fake.write_text("#!/bin/sh\necho 'QEMU emulator version 7.2.19 (Debian 1:7.2+dfsg-7+deb12u18)'\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:/usr/bin:/bin")
    monkeypatch.delenv("LABMIG_ACCEL", raising=False)
    with pytest.raises(LabError, match="corrupts TCG guests") as err:
        _check_qemu()
    assert "backports" in err.value.hint
    fake.write_text("#!/bin/sh\necho 'QEMU emulator version 10.0.2 (Debian 1:10.0.2+ds-2+deb13u1~bpo12+1)'\n")
    _check_qemu()
