"""Cold migration on the real local lab: disk moved, delta on the way back, confirm/revert,
verification stops before define, helper refusals over real ssh, kill at every step + recover.

The ``lab`` fixture and the guard that restores the lab after every test are in tests/conftest.py.
"""
import os

import pytest

from labmig.cold.finish import confirm, revert
from labmig.cold.migration import CRASH_POINTS, ColdMigration, ColdPlan, ColdRunOptions
from labmig.cold.trials import crash_trial, disk_digest, make_guest, wait_boot
from labmig.errors import MigrationFailed

pytestmark = pytest.mark.lab
BLOCK = 64 * 1024


@pytest.fixture
def journal(tmp_path, monkeypatch):
    monkeypatch.setenv("LABMIG_JOURNAL_DIR", str(tmp_path / "journal"))
    return tmp_path / "journal"


@pytest.fixture
def guest(lab):
    """coldt: a local disk with 8 MiB of random data, booted on lab1; removed after the test."""
    g = make_guest(lab, "coldt", 61)
    yield g
    lab.remove_guest("coldt")


def migrate(src, dst, **opts):
    with ColdMigration(ColdPlan("coldt", src, dst, ColdRunOptions(shutdown_timeout="1s", **opts))) as mig:
        return mig.run()


@pytest.mark.slow
def test_disk_moves_and_the_way_back_sends_only_changed_blocks(lab, guest, journal):
    src_before = disk_digest(guest.disk_outside("lab1"))
    there = migrate("lab1", "lab2")
    assert guest.where() == {"lab2": "running"}
    wait_boot(guest, 2)
    assert guest.boot_counter("lab2") == 2           # booted from the copied disk
    assert disk_digest(guest.disk_outside("lab1")) == src_before  # source untouched until confirm
    full_wire = there.bytes_by_phase["disk"]
    assert full_wire >= 8 << 20                       # the random data crossed ssh
    confirm("coldt")
    assert os.path.exists(guest.disk_outside("lab1"))  # kept: the older copy
    # Change 5 blocks on the running guest's disk, far apart, then migrate back.
    with open(guest.disk_outside("lab2"), "r+b") as f:
        for i in range(5):
            f.seek((1 << 20) + i * 16 * BLOCK)
            f.write(os.urandom(100))
    back = migrate("lab2", "lab1")
    wait_boot(guest, 3)
    assert guest.boot_counter("lab1") == 3
    delta_wire = back.bytes_by_phase["disk"]
    disk = back.extra["disks"][0]
    assert disk["blocks_sent"] == 6                   # the 5 changed blocks + the boot counter's
    changed = 6 * BLOCK
    overhead = disk["blocks_total"] * 16 * 3 + 64 * 1024
    assert changed <= delta_wire <= changed + overhead, (delta_wire, changed)
    assert delta_wire * 20 < full_wire
    print(f"\nfull copy {full_wire} B on the wire; way back {delta_wire} B for {changed} B of changed blocks")
    done = confirm("coldt", delete_source_disks=True)
    assert done.final_step == "confirmed"
    assert not os.path.exists(guest.disk_outside("lab2"))


@pytest.mark.slow
def test_revert_goes_back_to_the_untouched_source(lab, guest, journal):
    migrate("lab1", "lab2")
    wait_boot(guest, 2)
    done = revert("coldt")
    assert done.target == "source"
    assert guest.where() == {"lab1": "running"}
    wait_boot(guest, 2)   # booted again from the source disk, which had counted one boot
    assert guest.boot_counter("lab1") == 2


@pytest.mark.slow
def test_next_run_recovers_a_killed_one_and_sends_only_what_is_missing(lab, guest, journal):
    from labmig.cold.trials import _labmig

    env = dict(os.environ, LABMIG_COLD_CRASH_AT="disk-copied")
    killed = _labmig(["migrate", "cold", "coldt", "--to", "lab2", "--shutdown-timeout", "1s"], env)
    assert killed.returncode == -9
    result = migrate("lab1", "lab2")            # no `labmig recover` in between
    assert any(e.kind == "recovered" for e in result.events)
    assert guest.where() == {"lab2": "running"}
    disk = result.extra["disks"][0]
    # The killed run had copied the disk (counter 1). The rollback restarted the guest on lab1,
    # which bumps the counter once it has booted far enough: at most that one block differs.
    boots = guest.boot_counter("lab1")
    assert boots in (1, 2)
    assert disk["blocks_sent"] == boots - 1, disk
    assert result.bytes_by_phase["disk"] < 200 * 1024
    wait_boot(guest, boots + 1)


def test_shared_storage_is_not_copied(lab, journal):
    g = make_guest(lab, "colds", 64, disk="shared")
    try:
        with ColdMigration(ColdPlan("colds", "lab1", "lab2", ColdRunOptions(shutdown_timeout="1s"))) as mig:
            result = mig.run()
        assert result.bytes_by_phase["disk"] == 0 and "shared storage: no disk copy" in result.message
        confirm("colds")
        wait_boot(g, 2)
        assert g.where() == {"lab2": "running"}
    finally:
        lab.remove_guest("colds")


def test_verify_mismatch_stops_before_define(lab, guest, journal):
    dst_file = guest.disk_outside("lab2")

    def corrupt(point):
        if point.phase == "disk" and point.remaining_bytes == 0 and dst_file.exists():
            with open(dst_file, "r+b") as f:
                f.seek(2 << 20)
                byte = f.read(1)
                f.seek(2 << 20)
                f.write(bytes([byte[0] ^ 0xFF]))

    plan = ColdPlan("coldt", "lab1", "lab2", ColdRunOptions(shutdown_timeout="1s", verify="full"))
    with pytest.raises(MigrationFailed) as info:
        with ColdMigration(plan, on_point=corrupt) as mig:
            mig.run()
    assert info.value.rolled_back
    assert "does not match" in str(info.value)
    assert guest.where() == {"lab1": "running"}       # never defined on lab2
    assert (dst_file.parent / f".{dst_file.name}.incomplete").exists()


def test_helper_refusals_over_ssh(lab, tmp_path):
    from labmig.cold.hostops import agent_for
    from labmig.cold.sides import cold_host
    from labmig.remote.ssh import AgentError

    side = cold_host("lab2")
    images = side.local_path(side.image_dirs[0])
    outside = tmp_path / "victim"
    outside.write_bytes(b"keep")
    link = os.path.join(images, "escape.img")
    if os.path.lexists(link):
        os.unlink(link)
    os.symlink(str(outside), link)
    try:
        with agent_for(side) as agent:
            assert agent.target.address == "lab2"        # really through ssh
            for name in ("../../../etc/passwd", "/etc/passwd", "-oProxyCommand=sh", "a/../../x", "escape.img"):
                with pytest.raises(AgentError):
                    agent.call("open", path=name, size=1)
            assert agent.call("hello")[0]["pid"] > 0
    finally:
        os.unlink(link)
    assert outside.read_bytes() == b"keep"


@pytest.fixture(scope="module")
def crash_guest(lab):
    """One guest for every crash trial: each trial leaves it running on lab1 again."""
    g = make_guest(lab, "coldk", 65)
    yield g
    lab.remove_guest("coldk")


@pytest.mark.slow
@pytest.mark.parametrize("step", CRASH_POINTS)
def test_killed_at_each_step_then_recover(lab, crash_guest, tmp_path, step):
    for _ in range(2):
        result = crash_trial(lab, crash_guest, step, str(tmp_path / "journal"))
        assert result.ok, result
        assert result.ended_on == ("lab2" if step == "guest-up" else "lab1")


@pytest.mark.slow
def test_killed_during_revert_and_confirm_then_recover(lab, guest, journal):
    from labmig.cold.trials import _labmig

    env = dict(os.environ)
    migrate("lab1", "lab2")
    wait_boot(guest, 2)
    killed = _labmig(["revert", "coldt"], dict(env, LABMIG_COLD_CRASH_AT="revert-started"))
    assert killed.returncode == -9
    assert _labmig(["recover"], env).returncode == 0
    assert guest.where() == {"lab1": "running"}          # the revert was finished
    wait_boot(guest, 2)
    migrate("lab1", "lab2")
    wait_boot(guest, 3)
    killed = _labmig(["confirm", "coldt", "--delete-source-disks"],
                     dict(env, LABMIG_COLD_CRASH_AT="confirm-started"))
    assert killed.returncode == -9
    assert os.path.exists(guest.disk_outside("lab1"))    # killed before anything was deleted
    assert _labmig(["recover"], env).returncode == 0
    assert guest.where() == {"lab2": "running"}          # the confirm was finished
    assert not os.path.exists(guest.disk_outside("lab1"))


def _start_cli(lab, *args):
    import subprocess
    import sys

    return subprocess.Popen([sys.executable, "-m", "labmig", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "LABMIG_LAB": lab.name})


def _wait_for_step(proc, journal_path, step, poll, timeout=120.0):
    """Until the running migration ``proc`` has journaled ``step`` (or ended, or ``timeout``)."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if journal_path.exists() and f'"step":"{step}"' in journal_path.read_text():
            return
        time.sleep(poll)


def test_two_cold_migrations_of_one_vm_started_together(lab, guest, journal):
    """One runs; the other stops at once on the VM's lock, naming the first; the VM ends on one host."""
    from labstate import communicate

    args = ("migrate", "cold", "coldt", "--from", "lab1", "--to", "lab2", "--shutdown-timeout", "1s", "--confirm")
    procs = [_start_cli(lab, *args), _start_cli(lab, *args)]
    outs = [communicate(p, 300, "`labmig migrate cold coldt`", lab) for p in procs]
    codes = [p.returncode for p in procs]
    assert sorted(code == 0 for code in codes) == [False, True], (codes, outs)
    winner, loser = (0, 1) if codes[0] == 0 else (1, 0)
    assert codes[loser] == 3, outs[loser]
    assert f"being migrated by pid {procs[winner].pid} (" in outs[loser][1], outs[loser]
    assert "hint:" in outs[loser][1]
    assert guest.where() == {"lab2": "running"}


def test_recover_leaves_a_running_cold_migration_alone(lab, guest, journal):
    """The issue's case: `labmig recover` while a cold migration runs skips its journal."""

    from labstate import communicate

    path = journal / lab.name / "coldt.jsonl"
    mig = _start_cli(lab, "migrate", "cold", "coldt", "--to", "lab2", "--shutdown-timeout", "1s", "--confirm")
    _wait_for_step(mig, path, "source-stopped", 0.02)
    assert mig.poll() is None, "the migration ended before its source was stopped"
    rec = _start_cli(lab, "recover")
    out, err = communicate(rec, 120, "`labmig recover`", lab)
    still_running = mig.poll() is None
    mout, merr = communicate(mig, 300, "`labmig migrate cold coldt`", lab)
    assert rec.returncode == 0, err
    assert mig.returncode == 0, (mout, merr)
    if still_running:
        assert f"coldt: skipped: being migrated by pid {mig.pid}" in out, out
    assert guest.where() == {"lab2": "running"}


def test_a_cut_link_during_the_copy_ends_with_the_vm_back_on_the_source(lab, journal):
    """The link cut while the disk crosses it: ssh's keepalives end the helper's session,
    the copy fails, and the migration rolls back with the VM running on the source again,
    within 60 s of the cut, said in words (as Nova's cold migration reverts on a failed
    copy: the instance goes back to the source host)."""
    import time

    from labstate import communicate

    from labmig.lab.faults import inject

    g = make_guest(lab, "coldc", 66)
    path = journal / lab.name / "coldc.jsonl"
    try:
        lab.shape_link(512 * 1024)         # 8 MiB of random data: about 16 s on the wire
        mig = _start_cli(lab, "migrate", "cold", "coldc", "--to", "lab2", "--shutdown-timeout", "1s")
        _wait_for_step(mig, path, "disk-copying", 0.05)
        assert mig.poll() is None, "the migration ended before its copy started"
        time.sleep(1.0)
        inject(lab, "link-cut")
        cut = time.monotonic()
        out, err = communicate(mig, 120, "`labmig migrate cold coldc` after the link cut", lab)
        ended = time.monotonic() - cut
        assert mig.returncode != 0, (out, err)
        assert ended < 60, f"the migration took {ended:.0f} s to give up after the link was cut"
        assert "lab1" in out + err, (out, err)
        assert g.where() == {"lab1": "running"}
    finally:
        inject(lab, "link-restore")
        lab.shape_link(None)
        lab.remove_guest("coldc")
