"""Fault trials of the ``labmig`` command as a process, and a round trip of a local-disk guest.

    Cli             ``python -m labmig ARGS`` on the lab as a subprocess, its output in files
    CLI_CASES       registry: sigint, sigkill, second-process → its trial function
    sigint_trial()  Ctrl-C (SIGINT at its default action, ``env --default-signal=INT``) to
                    ``labmig migrate live`` mid-copy: exit 130, stderr says the VM runs on the
                    source, and it does
    sigkill_trial() SIGKILL mid-copy: libvirt's peer-to-peer job runs on with no labmig
                    steering it, ``labmig status --json`` lists it under "attention",
                    ``labmig abort VM`` stops it, the VM is on the source only
    second_process_trial()  a second ``labmig migrate live`` of the same VM while one runs:
                    exit 3 within seconds naming the holder's pid; the first completes
    round_trip()    a local-disk guest moved there and back: a Trial for the premise (the
                    guest does not write its disk after boot), then one per move

Every trial ends with :func:`labmig.live.faultcheck.check_end` (one host, paused nowhere,
disk unchanged, no memory error) and, where the VM stayed, the retry of
:func:`labmig.live.faultcases.retry_and_check`. Needs a LocalLab up.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from typing import Any, Callable

from .faultcases import migrate, other, retry_and_check
from .faultcheck import Trial, check_end, disk_sha256, observe

MiB = 2**20
CAP = "10MiB/s"


class Cli:
    """One ``labmig`` command running on ``lab``; ``default_int`` gives it SIGINT at its default action."""

    def __init__(self, lab: Any, *args: str, default_int: bool = False) -> None:
        argv = [sys.executable, "-m", "labmig", *args]
        if default_int:
            argv = ["env", "--default-signal=INT", *argv]
        self.args = args
        self._out = tempfile.TemporaryFile("w+", encoding="utf-8")
        self._err = tempfile.TemporaryFile("w+", encoding="utf-8")
        self.proc = subprocess.Popen(argv, stdout=self._out, stderr=self._err, text=True,
                                     env={**os.environ, "LABMIG_LAB": lab.name})

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait(self, timeout: float) -> int | None:
        """The exit code, or None if it still runs after ``timeout`` s."""
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            if self.proc.poll() is None:
                self.proc.send_signal(sig)
                self.wait(30)

    def _read(self, fh: Any) -> str:
        fh.seek(0)
        return str(fh.read())

    @property
    def out(self) -> str:
        return self._read(self._out)

    @property
    def err(self) -> str:
        return self._read(self._err)

    def tail(self, lines: int = 4) -> str:
        return " | ".join(self.err.strip().splitlines()[-lines:])


def run_cli(lab: Any, *args: str, timeout: float = 120) -> tuple[int | None, str, str]:
    cli = Cli(lab, *args)
    code = cli.wait(timeout)
    if code is None:
        cli.stop()
    return code, cli.out, cli.err


def job_bytes(lab: Any, host: str, vm: str) -> int | None:
    """Bytes the VM's migration job on ``host`` has sent, or None when it has no job there."""
    import libvirt

    try:
        conn = lab.host(host).connect()
    except Exception:
        return None
    try:
        stats = conn.lookupByName(vm).jobStats()
        if stats.get("type", libvirt.VIR_DOMAIN_JOB_NONE) == libvirt.VIR_DOMAIN_JOB_NONE:
            return None
        return int(stats.get("memory_processed", 0)) + int(stats.get("disk_processed", 0))
    except libvirt.libvirtError:
        return None
    finally:
        conn.close()


def wait_sent(lab: Any, host: str, vm: str, cli: Cli, nbytes: int, timeout: float = 90) -> bool:
    """Wait until the job on ``host`` sent ``nbytes``; False if the command ended or time ran out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and cli.proc.poll() is None:
        sent = job_bytes(lab, host, vm)
        if sent is not None and sent >= nbytes:
            return True
        time.sleep(0.2)
    return False


def _start(trial: Trial, lab: Any, guest: Any, dst: str, inject_after: int) -> Cli | None:
    src = other(dst)
    cli = Cli(lab, "migrate", "live", guest.name, "--to", dst, "--max-bandwidth", CAP, "--policy", "wait",
              default_int=True)
    if wait_sent(lab, src, guest.name, cli, inject_after):
        return cli
    code = cli.proc.poll()
    cli.stop()
    trial.message = (f"the migration did not reach {inject_after // MiB} MiB sent "
                     f"({'it ended with ' + str(code) if code is not None else 'timed out'}): {cli.tail()}")
    trial.problems.append(trial.message)
    return None


def _begin(name: str, lab: Any, guest: Any, trial_no: int,
           inject_after: int) -> tuple[Trial, str, str, str | None, Cli | None]:
    """A trial of ``name``: the guest's disk hash, then `migrate live` to the other host, once it has sent some."""
    trial = Trial(name, trial_no)
    src = guest.running_on()
    dst = other(src)
    sha = disk_sha256(guest, src)
    return trial, src, dst, sha, _start(trial, lab, guest, dst, inject_after)


def _where_line(err: str) -> str:
    return next((line.strip() for line in err.splitlines() if "where it is now:" in line), "")


def sigint_trial(lab: Any, guest: Any, trial_no: int = 0, inject_after: int = 16 * MiB) -> Trial:
    trial, src, _, sha, cli = _begin("sigint", lab, guest, trial_no, inject_after)
    if cli is None:
        return trial
    cli.proc.send_signal(signal.SIGINT)
    t0 = time.monotonic()
    trial.carried_out = True
    code = cli.wait(120)
    trial.details["command_ended_after"] = time.monotonic() - t0
    if code is None:
        cli.stop()
    trial.message = _where_line(cli.err) or cli.tail()
    trial.check(code == 130, f"`labmig migrate live` exited {code} after SIGINT, not 130: {cli.tail()}")
    want = f"where it is now: {guest.name} runs on {src}"
    trial.check(want in cli.err, f"stderr does not say '{want}': {cli.tail()}")
    check_end(trial, lab, guest, src, sha, since=t0)
    retry_and_check(trial, lab, guest, sha)
    return trial


def _attention(lab: Any, vm: str) -> tuple[dict[str, Any] | None, str]:
    code, out, err = run_cli(lab, "status", "--json", timeout=60)
    if code != 0:
        return None, f"`labmig status --json` exited {code}: {err.strip()[-300:]}"
    try:
        items = json.loads(out).get("attention", [])
    except (ValueError, AttributeError) as exc:
        return None, f"`labmig status --json` printed no JSON object: {exc}"
    return next((item for item in items if item.get("vm") == vm), None), ""


def sigkill_trial(lab: Any, guest: Any, trial_no: int = 0, inject_after: int = 16 * MiB) -> Trial:
    trial, src, _, sha, cli = _begin("sigkill", lab, guest, trial_no, inject_after)
    if cli is None:
        return trial
    cli.proc.kill()
    t0 = time.monotonic()
    trial.carried_out = True
    code = cli.wait(30)
    trial.check(code == -signal.SIGKILL, f"the command ended with {code}, not by SIGKILL")
    trial.check(job_bytes(lab, src, guest.name) is not None,
                f"libvirt's job on {src} ended with the labmig process (expected it to run on)")
    item, why = None, ""
    deadline = time.monotonic() + 30
    while item is None and time.monotonic() < deadline:
        item, why = _attention(lab, guest.name)
        if item is None:
            time.sleep(1.0)
    if item is not None:
        trial.detected_after = time.monotonic() - t0
        trial.details["attention"] = item
        trial.message = f"status: {item.get('what', '')}; do: {item.get('do', '')}"
    trial.check(item is not None, f"`labmig status` lists nothing under needs attention for {guest.name} {why}")
    code, _, err = run_cli(lab, "abort", guest.name, timeout=60)
    trial.details["abort"] = {"exit": code, "stderr": err.strip()[-300:]}
    trial.check(code == 0, f"`labmig abort {guest.name}` exited {code}: {err.strip()[-300:]}")
    check_end(trial, lab, guest, src, sha, since=t0)
    retry_and_check(trial, lab, guest, sha)
    return trial


def second_process_trial(lab: Any, guest: Any, trial_no: int = 0, inject_after: int = 16 * MiB) -> Trial:
    """The first command is capped below the guest's dirty rate; once the second was refused the
    guest stops dirtying memory (its dirty rate set to 0 over its UDP control) so the first completes."""
    trial, src, dst, sha, first = _begin("second-process", lab, guest, trial_no, inject_after)
    if first is None:
        return trial
    t0 = time.monotonic()
    trial.carried_out = True
    second = Cli(lab, "migrate", "live", guest.name, "--to", dst, "--max-bandwidth", CAP, "--policy", "wait")
    code = second.wait(60)
    took = trial.details["second_ended_after"] = time.monotonic() - t0
    if code is None:
        second.stop()
    trial.message = next((line.strip() for line in second.err.splitlines() if "error" in line), second.tail(1))
    trial.check(code == 3, f"the second command exited {code}, not 3: {second.tail()}")
    trial.check(took < 10, f"the second command took {took:.1f} s to give up")
    trial.check(f"pid {first.pid}" in second.err, f"the second command does not name the holder, pid {first.pid}: "
                f"{second.tail()}")
    rate = int(guest.spec.dirty_rate)
    try:
        guest.set_dirty_rate(0)
        code = first.wait(180)
    finally:
        guest.set_dirty_rate(rate)
    if code is None:
        first.stop()
    trial.details["first"] = {"exit": code, "stderr": first.tail()}
    trial.check(code == 0, f"the first command did not complete: exit {code}: {first.tail()}")
    check_end(trial, lab, guest, dst, sha, since=t0)
    return trial


CLI_CASES: dict[str, Callable[..., Trial]] = {
    "sigint": sigint_trial,
    "sigkill": sigkill_trial,
    "second-process": second_process_trial,
}


def round_trip(lab: Any, guest: Any, moves: int = 10, quiet: float = 6.0,
               on_trial: Callable[[Trial], None] | None = None) -> list[Trial]:
    """``moves`` live migrations of a local-disk guest, alternating hosts, each checked.

    The first Trial checks the premise: the disk's sha256 is the same ``quiet`` seconds apart
    while the guest runs (it writes its boot counter at boot only). Each move then must
    complete, leave the disk's content as it was before the first move, and remove the
    source's copy (``result.extra["source_disks_removed"]``); the walk stops at the first
    move that leaves the VM on no single host.
    """
    trials: list[Trial] = []

    def done(trial: Trial) -> None:
        trials.append(trial)
        if on_trial is not None:
            on_trial(trial)

    premise = Trial("disk-unwritten", 1, carried_out=True)
    here = guest.running_on()
    first = disk_sha256(guest, here)
    time.sleep(quiet)
    second = disk_sha256(guest, here)
    premise.details.update(host=here, sha256=first, seconds_apart=quiet)
    premise.check(first is not None and first == second,
                  f"the guest wrote its disk while it ran: sha256 {first} then {second}")
    premise.end = observe(lab, guest.name).words()
    premise.message = f"disk sha256 {str(first)[:12]}… on {here}, {'the same' if first == second else 'CHANGED'} {quiet:.0f} s later"
    done(premise)
    for move in range(1, moves + 1):
        trial = Trial("round-trip", move, carried_out=True)
        src = guest.running_on()
        dst = other(src)
        t0 = time.monotonic()
        result = migrate(guest, src, dst)
        trial.details["total_time"] = result.total_time
        trial.message = result.message
        trial.check(result.completed, f"move {move} ({src} → {dst}) did not complete: {result.message}")
        removed = result.extra.get("source_disks_removed") or []
        trial.details["source_disks_removed"] = removed
        trial.check(guest.disk in removed, f"the result does not list {guest.disk} as removed on {src}: "
                    f"removed {removed}, kept {result.extra.get('source_disks_kept')}")
        end = check_end(trial, lab, guest, dst, first, since=t0)
        done(trial)
        if end.single is None:
            break
    return trials
