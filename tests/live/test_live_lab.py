"""Live migration on the real local lab (LABMIG_LAB names it; `make test` brings one up).

What the issue asks to see, for real: a dirtying guest moved repeatedly with no memory
error, downtime consistent with what a client saw; non-convergence detected and resolved
three ways; the fault matrix rolled back; shared storage next to block migration; bad
input refused before anything changes; Ctrl-C and SIGTERM roll back. Guests here are named
live-* (indexes 51-53). The ``lab`` fixture and the guard that restores the lab after every
test are in tests/conftest.py.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from labmig.errors import PrecheckFailed
from labmig.live import LiveMigration, LiveOptions, LivePlan
from labmig.live.faultcases import FAULT_CASES, migrate, run_case
from labmig.live.faultcheck import disk_sha256
from labmig.live.probe import LabClientProbe
from labstate import communicate, describe, remove_guest, run_cli, wait_until

pytestmark = pytest.mark.lab
MiB = 2**20
DIRTY = 12_000_000            # bytes/s the guest rewrites: more than a 10 MiB/s link carries
SLOW = 10 * MiB


def _fresh_guest(lab, name, index, disk="shared", start_host="lab1", wait=True):
    from labmig.lab import GuestSpec

    try:
        lab.remove_guest(name)
    except Exception:
        pass
    spec = GuestSpec(name=name, index=index, memory=128 * MiB, dirty_rate=DIRTY, wss=24 * MiB, disk=disk)
    return lab.create_guest(spec, host=start_host, wait=wait, timeout=180)


@pytest.fixture(scope="module")
def guest(lab):
    """live-a, shared disk, dirtying faster than SLOW carries: running on one host before every test
    (after a failed one the lab guard puts it back)."""
    g = _fresh_guest(lab, "live-a", 51)
    yield g
    remove_guest(lab, g.name)


def other(host):
    return "lab2" if host == "lab1" else "lab1"


def _trace(result) -> str:
    """Every tenth sample of the run, for the message of a failed assertion."""
    return "; ".join(f"t={p.t:.0f}s it={p.iteration} left={p.remaining_bytes >> 20}MiB "
                     f"dirty={p.dirty_rate / MiB:.1f}MiB/s thr={p.throttle_pct:.0f}%"
                     for p in result.timeline[::10])


def assert_moved(guest, result, dst):
    assert result.completed, f"{result.message} | {_trace(result)}"
    assert guest.where() == {dst: "running"}, guest.where()      # on the destination only
    seq = len(guest.console(dst).heartbeats)
    wait_until(lambda: len(guest.console(dst).heartbeats) >= seq + 2, 20,
               f"two more heartbeats of {guest.name} on {dst} after the move", guest.lab, interval=0.5)
    assert guest.stat()["errors"] == 0
    assert all(guest.console(h).reported_errors == 0 for h in ("lab1", "lab2"))


@pytest.mark.slow
def test_dirtying_guest_moves_repeatedly_without_memory_errors(lab, guest):
    rows = []
    for run in range(3):
        src = guest.running_on()
        dst = other(src)
        if run < 2:
            result = migrate(guest, src, dst, probe=True)
        else:  # the last one through the command line, as a student would
            proc = run_cli("migrate", "live", guest.name, "--to", dst, "--json", lab=lab)
            assert proc.returncode == 0, proc.stderr
            from labmig.model import MigrationResult
            result = MigrationResult.from_json(proc.stdout)
            assert result.extra["placement"]["runs_on"] == [dst], result.extra   # as both hosts said after
        assert_moved(guest, result, dst)
        assert result.iterations >= 1 and result.timeline
        assert result.bytes_by_phase.get("precopy", 0) > 24 * MiB   # at least the working set went over
        assert 0 < result.downtime < 2.0
        gap = result.client_interruption
        assert gap is not None
        # The client cannot see much less than the pause (one 20 ms probe interval), and the
        # rest is the network learning the new port plus scheduling noise on a busy machine.
        # (libvirt times the pause from its own side, so allow it to overstate a little.)
        assert result.downtime * 0.75 - 0.03 <= gap <= result.downtime + 1.5, (result.downtime, gap)
        rows.append((src, dst, result.total_time, result.downtime, gap, result.iterations))
    print("\nrun  from  to    total    QEMU downtime  client-seen  passes")
    for i, (s, d, t, dt, gap, it) in enumerate(rows, 1):
        print(f"{i:<4} {s:<5} {d:<5} {t:6.2f} s {dt * 1000:8.0f} ms {gap * 1000:9.0f} ms  {it}")


def _nonconverging(lab, guest, resolve, verdict=True, **options):
    """Start a migration the link cannot finish; ``resolve(mig, event)`` is called on the verdict.

    ``verdict``: labmig's stall rule (labmig.nova.StallRule) must call it not converging.
    """
    src = guest.running_on()
    dst = other(src)
    seen = []

    def on_event(event):
        seen.append(event.kind)
        if event.kind == "not-converging" and resolve is not None:
            resolve(mig, event)

    options.setdefault("completion_timeout", 150)
    opts = LiveOptions(max_bandwidth=SLOW, **options)
    with LiveMigration(LivePlan(guest.name, src, dst, opts), on_event=on_event,
                       probe=LabClientProbe(guest)) as mig:
        result = mig.run()
    if verdict:
        assert "not-converging" in seen, seen
        assert any("not converging" in e.message and "Raise the bandwidth" in e.message for e in result.events)
    assert_moved(guest, result, dst)
    return result, seen


@pytest.mark.slow
def test_nonconvergence_resolved_by_raising_the_bandwidth(lab, guest):
    result, seen = _nonconverging(lab, guest, lambda mig, e: mig.set_bandwidth("1GiB/s"), policy="wait")
    assert seen.index("bandwidth") > seen.index("not-converging")
    assert "postcopy" not in seen and result.max_throttle_pct == 0


@pytest.mark.slow
def test_nonconvergence_resolved_by_auto_converge(lab, guest):
    # The guest's dirtier keeps to its rate by the clock, so a guest throttled by
    # 99 % still catches up to about 6 MiB/s: auto-converge's known floor. With
    # QEMU's 300 ms limit (3 MiB at 10 MiB/s) the end is then luck. A 1 s limit
    # (10 MiB) is not met unthrottled (15-24 MiB are left at each pass) and is met
    # once the throttle bites, after 30 s to 2 min on TCG: hence the long timeout.
    # QEMU's own trigger (migration_trigger_throttle in migration/ram.c: more dirtied in a
    # sync period than half of what was sent, in two periods) throttles before labmig's stall rule
    # (5 passes and 10 s without progress) may speak, so no verdict of labmig's is required:
    # the throttle QEMU applied, the passes it took and the completed move are the evidence.
    result, seen = _nonconverging(lab, guest, None, verdict=False, policy="wait", auto_converge=True,
                                  auto_converge_initial=60, auto_converge_increment=20, max_downtime=1.0,
                                  completion_timeout=300)
    assert result.max_throttle_pct >= 60
    assert result.iterations >= 2      # the throttle starts only after bitmap syncs that saw no convergence
    assert "postcopy" not in seen


@pytest.mark.slow
def test_nonconvergence_resolved_by_postcopy(lab, guest):
    result, seen = _nonconverging(lab, guest, None, policy="postcopy-on-stall")
    assert seen.index("postcopy") > seen.index("not-converging")
    assert result.bytes_by_phase.get("postcopy", 0) > 0
    assert result.strategy == "hybrid" and result.extra["policy"] == "postcopy-on-stall"


# The fault cases of the pre-copy phase; the post-copy and auto-converge ones, repeated, are
# the fault campaign's (bench/bench_live_faults.py), which runs every case of FAULT_CASES.
PRECOPY_CASES = ("kill-dst-libvirtd", "kill-dst-qemu", "cut-link", "abort")


@pytest.mark.slow
@pytest.mark.parametrize("case", PRECOPY_CASES)
def test_fault_rolls_back_and_retry_succeeds(lab, guest, case):
    assert case in FAULT_CASES
    for attempt in range(2):
        out = run_case(lab, guest, case, max_bandwidth=SLOW)
        assert out.injected, out.message
        assert out.outcome != "completed", out
        assert out.on_source, out
        assert out.destination_clean, out
        assert out.retry_ok, out
        assert out.memory_errors == 0, out
        assert out.message.startswith(("libvirt said", "no data moved")) and "Rolled back" in out.message
        if case == "kill-dst-libvirtd":   # a dead destination daemon is reported within 15 s
            assert out.detected_after is not None and out.detected_after < 15, out


@pytest.mark.slow
def test_shared_storage_and_block_migration_side_by_side_and_back(lab, guest):
    """Block migration moves the disk and, as Nova's post-live-migration clean-up does
    (ComputeManager._post_live_migration → driver.cleanup(destroy_disks=True) for storage
    that is not shared), removes the source's copy: so the guest can come back, and does."""
    local = _fresh_guest(lab, "live-b", 52, disk="local")
    try:
        results = {}
        start = local.running_on()
        disk_before = disk_sha256(local, start)
        for name, g in (("shared", guest), ("block", local)):
            src = g.running_on()
            results[name] = migrate(g, src, other(src), probe=True)
            assert_moved(g, results[name], other(src))
        shared, block = results["shared"], results["block"]
        assert shared.extra["block_migration"] is False and block.extra["block_migration"] is True
        assert "disk" not in shared.bytes_by_phase and block.bytes_by_phase["disk"] > 0
        # The copied disk is byte for byte what the source held; the source's copy is gone.
        assert disk_sha256(local, other(start)) == disk_before
        assert not local.disk_outside(start).exists()
        assert block.extra["source_disks_removed"] and not block.extra["source_disks_kept"]
        back = migrate(local, other(start), start, probe=True)
        assert_moved(local, back, start)
        assert back.extra["block_migration"] is True
        assert disk_sha256(local, start) == disk_before
        assert not local.disk_outside(other(start)).exists()
        print("\n                 shared storage   block migration")
        for label, fn in (("total time", lambda r: f"{r.total_time:.2f} s"),
                          ("QEMU downtime", lambda r: f"{r.downtime * 1000:.0f} ms"),
                          ("client-seen", lambda r: f"{r.client_interruption * 1000:.0f} ms"),
                          ("memory bytes", lambda r: f"{(r.bytes_total - r.bytes_by_phase.get('disk', 0)) / MiB:.1f} MiB"),
                          ("disk bytes", lambda r: f"{r.bytes_by_phase.get('disk', 0) / MiB:.1f} MiB")):
            print(f"{label:<16} {fn(shared):>15}   {fn(block):>15}")
    finally:
        remove_guest(lab, local.name)


def test_bad_input_is_refused_before_anything_changes(lab, guest):
    src = guest.running_on()
    dst = other(src)
    cases = [
        (("migrate", "live", "no-such-vm", "--to", dst), 2, "unknown VM"),
        (("migrate", "live", guest.name, "--to", "lab9"), 2, "unknown host"),
        (("migrate", "live", guest.name, "--to", src), 2, "same"),
        (("migrate", "live", guest.name, "--to", dst, "--max-bandwidth", "fast"), 2, "cannot read rate"),
    ]
    for args, code, words in cases:
        proc = run_cli(*args, lab=lab)
        assert proc.returncode == code, (args, proc.stderr)
        assert words in proc.stderr and "hint:" in proc.stderr, proc.stderr
        assert guest.where() == {src: "running"}


def test_already_migrating_and_abort_from_the_cli(lab, guest):
    src = guest.running_on()
    dst = other(src)
    holder = {}
    started = threading.Event()

    def slow():
        with LiveMigration(LivePlan(guest.name, src, dst, LiveOptions(max_bandwidth=SLOW, policy="wait")),
                           on_point=lambda p: started.set()) as mig:
            holder["mig"] = mig
            holder["result"] = mig.run()

    thread = threading.Thread(target=slow)
    thread.start()
    try:
        wait_until(lambda: started.is_set() or not thread.is_alive(), 30, "the background migration's first sample", lab)
        assert started.is_set(), "the background migration ended before its first sample"
        proc = run_cli("migrate", "live", guest.name, "--to", dst, lab=lab)
        # Named by its lock before anything asks the hosts (where the VM is active on both).
        assert proc.returncode == 3 and f"is being migrated by pid {os.getpid()}" in proc.stderr, proc.stderr
        with pytest.raises(PrecheckFailed, match="already migrating"):
            with LiveMigration(LivePlan(guest.name, src, dst)):
                pass
        status = json.loads(run_cli("status", "--json", lab=lab).stdout)
        jobs = [vm for h in status["hosts"] for vm in h["vms"] if vm["name"] == guest.name and "job" in vm]
        assert jobs and jobs[0]["job"]["memory_done_pct"] >= 0
        proc = run_cli("abort", guest.name, lab=lab)
        assert proc.returncode == 0, proc.stderr
    except BaseException:
        if "mig" in holder:
            holder["mig"].abort("the test failed: stop the background migration")
        raise
    finally:
        thread.join(120)
    assert not thread.is_alive(), f"the aborted migration had not ended 120 s later\n{describe(lab)}"
    assert str(holder["result"].outcome) == "aborted"
    assert guest.where() == {src: "running"}


def test_destination_without_the_guests_bridge_is_refused(lab):
    lab1 = lab.host("lab1")
    lab1.run(["ip", "link", "add", "brx", "type", "bridge"], check=False)
    lab1.run(["ip", "link", "set", "brx", "up"])
    g = None
    try:
        from labmig.lab import GuestSpec
        spec = GuestSpec(name="live-c", index=53, memory=128 * MiB, wss=16 * MiB)
        try:
            lab.remove_guest(spec.name)
        except Exception:
            pass
        g = lab.create_guest(spec, host="lab1", start=False)
        conn = lab1.connect()
        try:
            xml = conn.lookupByName(spec.name).XMLDesc(0).replace("bridge='br0'", "bridge='brx'")
            conn.defineXML(xml).create()
        finally:
            conn.close()
        proc = run_cli("migrate", "live", spec.name, "--to", "lab2", lab=lab)
        assert proc.returncode == 3, proc.stderr
        assert "bridge 'brx' is missing on lab2" in proc.stderr and "hint:" in proc.stderr
        assert g.where() == {"lab1": "running"}
    finally:
        if g is not None:
            remove_guest(lab, "live-c")
        lab1.run(["ip", "link", "del", "brx"], check=False)


@pytest.mark.parametrize("signum, code, words", [(signal.SIGINT, 130, "interrupted"),
                                                 (signal.SIGTERM, 128 + signal.SIGTERM, "stopped by SIGTERM")],
                         ids=["ctrl-c", "sigterm"])
def test_stop_signal_rolls_back(lab, guest, signum, code, words):
    """Ctrl-C (SIGINT), or SIGTERM as `kill` sends, mid-copy: the command ends, the VM stays on its source.

    The command starts as a terminal's foreground job would, with SIGINT at its default action
    (``env --default-signal=INT``): a test run started in the background by a non-interactive shell
    inherits SIGINT *ignored*, and so would the command, which then never saw the signal (the
    test waited 120 s and left the migration running, the guest on two hosts for minutes).
    """
    src = guest.running_on()
    dst = other(src)
    proc = subprocess.Popen(["env", "--default-signal=INT", sys.executable, "-m", "labmig", "migrate", "live",
                             guest.name, "--to", dst, "--max-bandwidth", "10MiB/s", "--policy", "wait"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "LABMIG_LAB": lab.name})
    conn = lab.host(src).connect()
    try:
        dom = conn.lookupByName(guest.name)
        wait_until(lambda: dom.jobStats().get("memory_processed") or proc.poll() is not None, 60,
                   "the migration's first bytes", lab)
        assert proc.poll() is None, f"the command ended before the migration started: {proc.communicate()[1]}"
    finally:
        conn.close()
    time.sleep(1.0)   # well into pass 1
    proc.send_signal(signum)
    sent = time.monotonic()
    _, err = communicate(proc, 120, f"`labmig migrate live` after {signal.Signals(signum).name}", lab)
    print(f"\n{signal.Signals(signum).name}: the command ended {time.monotonic() - sent:.1f} s after the signal")
    assert proc.returncode == code, err
    assert words in err
    assert guest.where() == {src: "running"}
    assert f"where it is now: {guest.name} runs on {src} (defined there only)" in err   # both hosts asked


@pytest.mark.slow
@pytest.mark.parametrize("postcopy, switch", [("on-timeout", "postcopy"), ("off", "paused")])
def test_nova_completion_timeout_forces_completion(lab, guest, postcopy, switch):
    """Nova's live_migration_timeout_action=force_complete: post-copy when permitted, else pause."""
    src = guest.running_on()
    dst = other(src)
    opts = LiveOptions(max_bandwidth=SLOW, policy="nova", completion_timeout=18, timeout_action="force-complete",
                       postcopy=postcopy)
    with LiveMigration(LivePlan(guest.name, src, dst, opts)) as mig:
        result = mig.run()
    kinds = [e.kind for e in result.events]
    assert switch in kinds and "abort" not in kinds, kinds
    assert "not done after" in next(e.message for e in result.events if e.kind == switch)
    assert_moved(guest, result, dst)


@pytest.mark.parametrize("options, strategy", [({"compression": "xbzrle"}, "compression"),
                                               ({"parallel_connections": 2}, "compression")])
def test_compression_and_multifd_channels(lab, guest, options, strategy):
    src = guest.running_on()
    result = migrate(guest, src, other(src), **options)
    assert result.strategy == strategy
    assert_moved(guest, result, other(src))


def test_multifd_compression_refused_where_libvirt_lacks_it(lab, guest):
    src = guest.running_on()
    conn = lab.host(src).connect()
    try:
        version = conn.getLibVersion()
    finally:
        conn.close()
    if version >= 9_001_000:
        pytest.skip(f"libvirt {version} may know zstd; the refusal is for 9.0")
    proc = run_cli("migrate", "live", guest.name, "--to", other(src), "--compression", "zstd",
                      "--parallel-connections", "2", lab=lab)
    assert proc.returncode == 3 and "does not know zstd" in proc.stderr and "hint:" in proc.stderr
    assert guest.where() == {src: "running"}
