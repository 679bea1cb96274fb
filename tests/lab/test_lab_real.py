"""The real local lab: two libvirtd hosts in namespaces, the TCG guest, migrations, faults."""
import errno
import os
import socket
import subprocess
import threading
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from labmig.errors import LabError
from labmig.lab import SHARED_DISK_MIGRATE_FLAGS, GuestSpec, LocalLab, inject
from labmig.lab.guest import heartbeat_socket, netns_socket, wait_for
from labstate import side_lab

pytestmark = pytest.mark.lab
MiB = 2**20


def _running(pid: int) -> bool:
    """True while pid is a live process (an exited one waiting to be reaped is not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _guest(lab, request, **kwargs):
    spec = GuestSpec(**kwargs)
    lab.remove_guest(spec.name)       # a crashed earlier run may have left one
    request.addfinalizer(lambda: lab.remove_guest(spec.name))
    return spec


def test_two_hosts_with_distinct_identities(lab):
    assert lab.is_up()
    assert lab.accel in ("tcg", "kvm")
    seen = {}
    for name, host in lab.hosts.items():
        conn = host.connect()
        try:
            caps = ET.fromstring(conn.getCapabilities())
            seen[name] = caps.findtext("host/uuid")
        finally:
            conn.close()
        assert host.run(["hostname"]).stdout.strip() == name
    assert seen["lab1"] != seen["lab2"]
    assert lab.status()["up"]
    # Running up again is harmless: same daemons, nothing restarted.
    pids = {n: (h.libvirtd_pid(), h.sshd_pid()) for n, h in lab.hosts.items()}
    report = lab.up(install=False)
    assert report.already_up
    assert pids == {n: (h.libvirtd_pid(), h.sshd_pid()) for n, h in lab.hosts.items()}


def test_hosts_reach_each_other_over_ssh_with_the_lab_keys(lab):
    out = lab.host("lab1").run(lab.host("lab1").ssh_argv("lab2", "hostname"), timeout=30).stdout.strip()
    assert out == "lab2"
    # The local image directories are private to each host.
    probe = lab.host("lab2").local_image_dir_outside / "only-on-lab2"
    probe.write_text("x")
    try:
        ls1 = lab.host("lab1").run(["ls", lab.host("lab1").local_image_dir]).stdout.split()
        ls2 = lab.host("lab1").run(lab.host("lab1").ssh_argv("lab2", "ls", "/var/lib/libvirt/images")).stdout.split()
        assert "only-on-lab2" in ls2 and "only-on-lab2" not in ls1
    finally:
        probe.unlink()


@pytest.mark.slow
def test_guest_boots_counts_its_boot_and_changes_rate_while_running(lab, request):
    spec = _guest(lab, request, name="boottest", index=20, wss=16 * MiB)
    hb = heartbeat_socket(lab.layout)
    g = lab.create_guest(spec, host="lab1")
    # Heartbeats on the network too, sent by the guest to the client's address.
    hb.settimeout(5)
    deadline = time.monotonic() + 10
    got = b""
    while time.monotonic() < deadline and not got.startswith(b"HB boottest "):
        got = hb.recv(256)
    hb.close()
    assert got.startswith(b"HB boottest ") and b"boot=1" in got
    log = g.console("lab1")
    assert log.boot_count == 1 and g.boot_counter("lab1") == 1
    assert g.stat()["dirty"] == 0
    g.set_dirty_rate(3 * MiB)
    stat = g.stat()
    assert stat["dirty"] == 3 * MiB
    dirtied = stat["dirtied"]
    time.sleep(1.5)
    assert g.stat()["dirtied"] - dirtied >= (3 * MiB // 4096)  # ~768 pages a second
    assert g.set_working_set(8 * MiB) == 8 * MiB
    # Heartbeats keep coming, and the checker finds nothing on an undisturbed guest.
    wait_for(lambda: len(g.console("lab1").heartbeats) >= 3, 10)
    log = g.console("lab1")
    assert len(log.heartbeats) >= 3 and log.reported_errors == 0 and not log.panics
    assert "LABMIG RATE 3145728" in log.text


@pytest.mark.slow
def test_memory_checker_reports_a_page_changed_behind_its_back(lab, request):
    spec = _guest(lab, request, name="chktest", index=23, wss=8 * MiB, check_ms=500)
    g = lab.create_guest(spec, host="lab2")
    assert g.control("CORRUPT 17").startswith("OK")
    found = wait_for(lambda: g.console("lab2").memory_errors, 10)
    assert found and "page=17" in found[0]
    assert g.stat()["errors"] == 1


@pytest.mark.slow
def test_live_migration_with_workload_keeps_memory_intact(lab, request):
    import libvirt

    spec = _guest(lab, request, name="livetest", index=21, wss=48 * MiB, dirty_rate=8 * MiB, check_ms=1000)
    g = lab.create_guest(spec, host="lab1")
    probe = g.start_probe(interval=0.02)
    time.sleep(1.5)
    rounds_before = g.stat()["rounds"]
    conn = lab.host("lab1").connect()
    try:
        dom = conn.lookupByName(spec.name)
        flags = (libvirt.VIR_MIGRATE_LIVE | libvirt.VIR_MIGRATE_PEER2PEER | libvirt.VIR_MIGRATE_PERSIST_DEST
                 | libvirt.VIR_MIGRATE_UNDEFINE_SOURCE | SHARED_DISK_MIGRATE_FLAGS)
        dom.migrateToURI3(lab.host("lab2").migration_uri, {}, flags)
    finally:
        conn.close()
    assert g.where() == {"lab2": "running"}
    # Let the checker go over the whole working set at least twice on the destination.
    assert wait_for(lambda: g.stat()["rounds"] >= rounds_before + 4, 20)
    report = probe.stop()
    log2 = g.console("lab2")
    assert not log2.ready, "the guest rebooted instead of moving"
    assert log2.heartbeats, "no heartbeat from the destination"
    assert int(log2.heartbeats[0]["seq"]) > int(g.console("lab1").heartbeats[-1]["seq"])
    assert log2.memory_errors == [] and log2.reported_errors == 0 and g.stat()["errors"] == 0
    assert not log2.panics
    assert g.boot_counter("lab2") == 1
    assert report.answered > 0.8 * report.sent
    assert report.max_gap < 5.0


@pytest.mark.slow
def test_cold_migration_moves_the_disk_and_the_boot_counter_shows_it(lab, request):
    spec = _guest(lab, request, name="coldtest", index=22, disk="local", wss=8 * MiB)
    g = lab.create_guest(spec, host="lab1")
    src, dst = lab.host("lab1"), lab.host("lab2")
    assert g.boot_counter("lab1") == 1
    c1 = src.connect()
    try:
        dom = c1.lookupByName(spec.name)
        xml = dom.XMLDesc(0)
        dom.destroy()
        # The disk travels over ssh between the hosts, as an operator (or Nova) would copy it.
        src.run(src.scp_argv(g.disk, "lab2", g.disk), timeout=60)
        c2 = dst.connect()
        try:
            c2.defineXML(xml).create()
        finally:
            c2.close()
        dom.undefine()
    finally:
        c1.close()
    log = g.wait_ready("lab2", timeout=60)
    assert log.boot_count == 2
    assert g.boot_counter("lab2") == 2          # the copy on lab2 is the disk that booted
    assert g.boot_counter("lab1") == 1          # the source's copy was left as it was
    assert g.where() == {"lab2": "running"}


def _transfer_seconds(lab, nbytes: int) -> float:
    """Send nbytes over TCP from lab1 to lab2 across the link; seconds until all arrived."""
    h1, h2 = lab.hosts["lab1"].layout, lab.hosts["lab2"].layout
    server = netns_socket(h2.netns_path, socket.AF_INET, socket.SOCK_STREAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind((h2.link_addr, 0))
    server.listen(1)
    port = server.getsockname()[1]
    got = {}

    def receive():
        conn, _ = server.accept()
        n = 0
        while n < nbytes:
            chunk = conn.recv(1 << 16)
            if not chunk:
                break
            n += len(chunk)
        got["t"] = time.monotonic()
        got["n"] = n
        conn.close()

    t = threading.Thread(target=receive)
    t.start()
    client = netns_socket(h1.netns_path, socket.AF_INET, socket.SOCK_STREAM)
    client.settimeout(30)
    client.connect((h2.link_addr, port))
    t0 = time.monotonic()
    client.sendall(b"\0" * nbytes)
    client.close()
    t.join(30)
    server.close()
    assert got.get("n") == nbytes
    return got["t"] - t0


def _link_works(lab) -> bool:
    h1 = lab.host("lab1")
    r = h1.run(["timeout", "3", "bash", "-c", f"</dev/tcp/{lab.host('lab2').address}/16509"], check=False)
    return r.returncode == 0


def test_fault_link_cut_and_restore(lab):
    assert _link_works(lab)
    inject(lab, "link-cut")
    try:
        assert not _link_works(lab)
        assert lab.status()["link"]["up"] is False
    finally:
        inject(lab, "link-restore")
    assert _link_works(lab)


def test_fault_link_slow_limits_throughput_to_the_token_rate(lab):
    nbytes = 3 * MiB
    fast = _transfer_seconds(lab, nbytes)
    inject(lab, "link-slow", rate=1 * MiB)
    try:
        assert lab.link_rate == 1 * MiB
        slow = _transfer_seconds(lab, nbytes)
    finally:
        inject(lab, "link-slow", rate=None)
    assert lab.link_rate is None
    # A token bucket at 1 MiB/s needs about 3 s for 3 MiB (less one burst of 64 KiB).
    assert slow > 2.5, (fast, slow)
    assert slow < 6.0
    assert fast < slow / 3


def test_fault_kill_libvirtd_then_up_restarts_it(lab):
    pid = lab.host("lab2").libvirtd_pid()
    inject(lab, "kill-libvirtd", host="lab2")
    assert wait_for(lambda: lab.host("lab2").libvirtd_pid() is None, 5)
    with pytest.raises(LabError):
        lab.host("lab2").connect().close()
    assert not lab.is_up()
    lab.up(install=False)
    assert lab.host("lab2").libvirtd_pid() not in (None, pid)
    lab.host("lab2").connect().close()


@pytest.mark.slow
def test_fault_kill_qemu_stops_the_guest(lab, request):
    spec = _guest(lab, request, name="killtest", index=24, wss=8 * MiB)
    g = lab.create_guest(spec, host="lab1")
    pid = lab.host("lab1").qemu_pid(spec.name)
    assert pid
    out = inject(lab, "kill-qemu", host="lab1", domain=spec.name)
    assert out["pid"] == pid
    assert wait_for(lambda: g.where().get("lab1") == "shut off", 15)
    assert wait_for(lambda: not _running(pid), 5)
    with pytest.raises(LabError):
        g.stat()


def test_fault_fill_disk_makes_the_image_dir_full(lab):
    host = lab.host("lab2")
    d = host.local_image_dir_outside
    try:
        out = inject(lab, "fill-disk", host="lab2")
        assert out["bytes"] > 0
        st = os.statvfs(d)
        assert st.f_bavail * st.f_frsize < MiB
        with pytest.raises(OSError) as err:
            with open(d / "new.img", "wb") as f:
                f.write(b"\1" * MiB)
                f.flush()
        assert err.value.errno == errno.ENOSPC
        assert (lab.host("lab1").local_image_dir_outside / ".labmig-fill").exists() is False
    finally:
        (d / "new.img").unlink(missing_ok=True)
        inject(lab, "unfill-disk", host="lab2")
    st = os.statvfs(d)
    assert st.f_bavail * st.f_frsize > 100 * MiB


@pytest.mark.slow
def test_a_second_lab_runs_beside_and_clean_after_a_crash_leaves_nothing(lab):
    other = LocalLab(side_lab("dc"))   # derived from the test lab's name: two sessions never share it
    other.clean()
    other.up(install=False)
    try:
        assert other.is_up() and lab.is_up()
        g = other.create_guest(GuestSpec(name="dc", index=1, wss=8 * MiB), host="lab2")
        probe = g.start_probe()
        assert g.stat()["boot"] == 1
        qemu = other.host("lab2").qemu_pid("dc")
        assert qemu
        # Leave it as a crashed run would: daemons gone without cleaning up, QEMU orphaned.
        for h in other.hosts.values():
            os.kill(h.libvirtd_pid(), 9)
            os.kill(h.sshd_pid(), 9)
        assert wait_for(lambda: all(h.libvirtd_pid() is None for h in other.hosts.values()), 5)
        assert Path(f"/proc/{qemu}").exists()
    finally:
        removed = other.clean()
    assert removed
    assert wait_for(lambda: not _running(qemu), 5)
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert f"{other.name}-" not in netns
    from labmig.lab import netns as nsmod
    assert nsmod.lab_pids(other.layout) == []
    assert probe.proc.wait(5) is not None
    mounts = Path("/proc/self/mountinfo").read_text()
    assert f"/{other.name}/" not in mounts
    assert not other.layout.run_dir.exists() and not other.layout.state_dir.exists()
    # The lab under test was not touched.
    assert lab.is_up() and lab.status()["up"]


def test_link_latency_is_applied_or_refused_clearly(lab):
    try:
        lab.shape_link(8 * MiB, latency=0.02)
    except LabError as exc:
        assert "netem" in str(exc) and exc.hint
        assert lab.link_rate is None          # nothing half-applied
        return
    try:
        out = subprocess.run(["tc", "-n", lab.hosts["lab1"].layout.netns, "qdisc", "show", "dev", "link0"],
                             capture_output=True, text=True).stdout
        assert "netem" in out and "tbf" in out
    finally:
        lab.shape_link(None)


def test_cli_status_and_fault_against_the_lab(lab):
    import json
    import sys

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "labmig", "lab", *args, "--name", lab.name],
                              capture_output=True, text=True, timeout=60)

    out = cli("status", "--json")
    assert out.returncode == 0, out.stderr
    status = json.loads(out.stdout)
    assert status["up"] and set(status["hosts"]) == {"lab1", "lab2"}
    assert status["hosts"]["lab1"]["uri"] == lab.host("lab1").uri
    bad = cli("fault", "kill-qemu", "hots=lab1")
    assert bad.returncode == 2 and "hint" in bad.stderr
    out = cli("fault", "link-slow", "rate=2MiB/s")
    try:
        assert out.returncode == 0, out.stderr
        assert lab.link_rate == 2 * MiB
    finally:
        cli("link", "none")
    assert lab.link_rate is None
