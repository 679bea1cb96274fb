"""Cold migration on the local lab: a fault campaign, a round trip, and the copy's bytes against rsync.

The campaign: labmig killed at every step and at random times (migrate, confirm, revert), two
labmig processes on one VM, a cut link, a full destination disk.

Cases (``--cases``, default all, in this order; each trial ends with the VM running on exactly
one host and its disks checked, see ``labmig.cold.campaign.verify_end``):

    step-kill            a child ``labmig migrate cold`` SIGKILLs itself right after each journaled
                         step (``labmig.cold.migration.CRASH_POINTS``, ``--steps``), then
                         ``labmig recover`` (``labmig.cold.trials.crash_trial``)
    random-kill          SIGKILL ``labmig migrate cold`` after a delay drawn uniformly over a normal
                         run's wall time (measured once first), then ``labmig recover``
    confirm-kill, confirm-delete-kill, revert-kill
                         the same during ``labmig confirm`` (without, with ``--delete-source-disks``)
                         and ``labmig revert``
    two-migrations       two ``labmig migrate cold`` of the VM started together: one exits 3 naming
                         the other as the lock's holder, the other completes
    recover-during       ``labmig recover`` while a migration runs: it skips the VM
    link-cut             the link cut during the disk copy: the VM on the source within 60 s
    disk-full-before, disk-full-during
                         the destination's image directory full before the migration / filled
                         during its copy: it fails, the VM on the source, no bogus complete copy
    round-trip           cold there and back ``--round-trips`` times, each move confirmed: the guest
                         booted from the copy, the disk identical but for its boot counter, bytes
                         on the wire per move (the first full, the others only changed blocks)
    copy                 a full copy against the way back with 5 changed blocks, bytes counted on the
                         ssh pipes, rsync over the same ssh on the same change as the peer

``labmig.cold.faultcases`` holds the cases, ``labmig.cold.campaign`` the harness. Random draws
come from ``--seed`` (printed when not given) per case and trial: ``--seed S --cases CASE
--start N --trials 1 --durations ...`` (the durations line printed at the end) replays trial N.

    python -m bench.bench_cold_crash [--lab NAME] [--trials 3] [--cases a,b] [--steps a,b]
        [--round-trips 5] [--seed S] [--durations migrate=9.1,...] [--pause-while FILE] [--json FILE]
"""
from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from labmig.cold.campaign import DURATION_KINDS, Campaign, other
from labmig.cold.faultcases import CASES, round_trip
from labmig.cold.migration import CRASH_POINTS
from labmig.cold.trials import SECTOR, TrialResult, crash_trial, disk_digest, wait_boot

GUEST, INDEX = "bcold", 63
BLOCK = 64 * 1024
ALL_CASES = ("step-kill", *CASES, "round-trip", "copy")


def rsync_peer(lab: Any, guest: Any, a: str, b: str) -> dict[str, Any]:
    """rsync --inplace over the lab's ssh from ``b``'s current disk onto a copy of ``a``'s older one."""
    from labmig.lab.netns import host_cmd
    from labmig.lab.sshd import config_path

    scratch_inside = guest.disk.replace(".img", "-peer.img")
    scratch = lab.host(a).outside(scratch_inside)
    shutil.copyfile(guest.disk_outside(a), scratch)
    try:
        argv = host_cmd(lab.layout.host(b)) + [
            "rsync", "--inplace", "--no-whole-file", "--ignore-times", "--stats",
            "-e", f"ssh -F {config_path(lab.layout)}", guest.disk, f"{a}:{scratch_inside}"]
        t = time.monotonic()
        out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
        seconds = time.monotonic() - t
        same = disk_digest(scratch) == disk_digest(guest.disk_outside(b))
    finally:
        os.unlink(scratch)
    sent = int(re.search(r"Total bytes sent: ([\d,]+)", out).group(1).replace(",", ""))  # type: ignore[union-attr]
    recv = int(re.search(r"Total bytes received: ([\d,]+)", out).group(1).replace(",", ""))  # type: ignore[union-attr]
    return {"bytes": sent + recv, "seconds": seconds, "identical": same}


def link_bytes(lab: Any) -> int:
    """Bytes both ways on lab1's end of the inter-host link (ssh, TCP/IP and encryption included)."""
    from labmig.lab.netns import LINK_DEV

    out = subprocess.run(["ip", "-n", lab.layout.host("lab1").netns, "-s", "-j", "link", "show", LINK_DEV],
                         capture_output=True, text=True, check=True).stdout
    stats = json.loads(out)[0]["stats64"]
    return int(stats["rx"]["bytes"]) + int(stats["tx"]["bytes"])


def copy_figures(c: Campaign) -> dict[str, Any]:
    """Full copy vs the way back with 5 changed blocks; rsync on the same change as the peer.

    The 5 blocks change the guest's data: the campaign's reference digest is taken again after.
    """
    from labmig.cold.finish import confirm
    from labmig.cold.migration import ColdMigration, ColdPlan, ColdRunOptions

    lab, guest = c.lab, c.guest
    c.make_ready()
    a = c.home()
    b = other(a)
    c.remove_copy(b)
    opts = ColdRunOptions(shutdown_timeout=1.0)
    link0 = link_bytes(lab)
    with ColdMigration(ColdPlan(GUEST, a, b, opts)) as mig:
        there = mig.run()
    link_full = link_bytes(lab) - link0
    confirm(GUEST)
    wait_boot(guest, guest.boot_counter(b))
    with open(guest.disk_outside(b), "r+b") as f:
        for i in range(5):
            f.seek((1 << 20) + i * 16 * BLOCK)
            f.write(os.urandom(100))
    peer = rsync_peer(lab, guest, a, b)
    link0 = link_bytes(lab)
    with ColdMigration(ColdPlan(GUEST, b, a, opts)) as mig:
        back = mig.run()
    link_delta = link_bytes(lab) - link0
    confirm(GUEST)
    wait_boot(guest, guest.boot_counter(a))
    c.reference = disk_digest(c.disk(a), skip=SECTOR)
    disk = back.extra["disks"][0]
    return {"full_bytes": there.bytes_by_phase["disk"], "full_seconds": there.extra["phases"]["disk"],
            "delta_bytes": back.bytes_by_phase["disk"], "delta_seconds": back.extra["phases"]["disk"],
            "changed_bytes": disk["blocks_sent"] * BLOCK, "blocks_sent": disk["blocks_sent"],
            "blocks_total": disk["blocks_total"], "rsync_bytes": peer["bytes"], "rsync_seconds": peer["seconds"],
            "rsync_identical": peer["identical"], "link_full": link_full, "link_delta": link_delta,
            "downtime_full": there.downtime, "downtime_delta": back.downtime}


def print_copy(fig: dict[str, Any]) -> None:
    print("\ncopy of a 16 MiB disk (8 MiB random data), bytes counted on the ssh pipes:")
    print(f"  full copy (destination empty)   {fig['full_bytes']:>10,} B  in {fig['full_seconds']:.2f} s")
    print(f"  way back (destination older)    {fig['delta_bytes']:>10,} B  in {fig['delta_seconds']:.2f} s "
          f"({fig['blocks_sent']} of {fig['blocks_total']} blocks, {fig['changed_bytes']:,} B changed)")
    print(f"  on the link itself (ssh + TCP/IP, both ways): full {fig['link_full']:,} B, "
          f"way back {fig['link_delta']:,} B")
    print(f"  ratio way back / full           {fig['delta_bytes'] / fig['full_bytes']:.4f}")
    print(f"  ratio way back / changed blocks {fig['delta_bytes'] / fig['changed_bytes']:.3f}")
    print(f"  peer: rsync --inplace over the same ssh, same change: {fig['rsync_bytes']:,} B "
          f"in {fig['rsync_seconds']:.2f} s  (labmig / rsync bytes: {fig['delta_bytes'] / fig['rsync_bytes']:.2f}; "
          f"rsync result identical: {fig['rsync_identical']})")


def line(label: str, n: int, r: TrialResult) -> None:
    print(f"  {label:<36} #{n:<3} {'pass' if r.ok else 'FAIL'} {r.seconds:6.1f} s  {r.detail}", flush=True)


def failed_trial(case: str, t0: float, exc: BaseException) -> TrialResult:
    return TrialResult(step="", ok=False, seconds=time.monotonic() - t0, case=case,
                       detail=f"FAILED: the trial raised {type(exc).__name__}: {exc}")


def step_kills(c: Campaign, steps: list[str], first: int, trials: int) -> list[TrialResult]:
    out = []
    for step in steps:
        for n in range(first, first + trials):
            c.wait_quiet()
            t0 = time.monotonic()
            try:
                ready = c.make_ready()
                src = c.home()
                r = crash_trial(c.lab, c.guest, step, str(c.journal_root), src, other(src))
                r.checks["ready"] = ready
            except Exception as exc:
                r = failed_trial("step-kill", t0, exc)
                r.step = step
            out.append(r)
            line(f"step-kill after {step}", n, r)
    return out


def random_cases(c: Campaign, name: str, first: int, trials: int) -> list[TrialResult]:
    out = []
    for n in range(first, first + trials):
        c.wait_quiet()
        t0 = time.monotonic()
        try:
            r = CASES[name].fn(c, n)
        except Exception as exc:
            r = failed_trial(name, t0, exc)
        out.append(r)
        line(name, n, r)
    return out


def summary(rows: dict[str, list[TrialResult]]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    print(f"\n{'case':<22} {'passed':>9}  {'mean time':>9}  {'VM ended on':<12} trials")
    for name, results in rows.items():
        if not results:
            continue
        ok = sum(r.ok for r in results)
        mean = sum(r.seconds for r in results) / len(results)
        ends = ",".join(sorted({r.ended_on or "?" for r in results}))
        print(f"{name:<22} {ok:>4} / {len(results):<3} {mean:7.1f} s  {ends:<12} "
              + " ".join("." if r.ok else "F" for r in results))
        out[name] = {"passed": ok, "trials": len(results), "mean_seconds": mean, "ended_on": ends,
                     "results": [r.to_dict() for r in results]}
    passed, total = sum(s["passed"] for s in out.values()), sum(s["trials"] for s in out.values())
    print(f"{'all cases':<22} {passed:>4} / {total:<3}")
    return out


def print_steps(results: list[TrialResult]) -> None:
    by_step: dict[str, list[TrialResult]] = {}
    for r in results:
        by_step.setdefault(r.step, []).append(r)
    print(f"\n{'step-kill: killed after':<24} {'passed':>8}  {'VM ended on':<12} mean time")
    for step, rs in by_step.items():
        ends = ",".join(sorted({r.ended_on or "?" for r in rs}))
        print(f"{step:<24} {sum(r.ok for r in rs):>3} / {len(rs):<3}  {ends:<12} "
              f"{sum(r.seconds for r in rs) / len(rs):5.1f} s")


def print_round_trip(results: list[TrialResult]) -> None:
    print(f"\n{'round trip: move':<18} {'bytes on the wire':>18} {'blocks sent':>14} {'migrate':>8} {'boot':>5}  result")
    for k, r in enumerate(results, 1):
        ch = r.checks
        wire = "?" if ch.get("wire") is None else f"{ch['wire']:,}"
        print(f"{k:>3}  {r.step:<12} {wire:>18} {ch.get('blocks_sent')!s:>6} / {ch.get('blocks_total')!s:<6}"
              f"{ch.get('migrate_seconds', 0.0):7.1f} s {r.ended_on or '?':>5}  {'pass' if r.ok else 'FAIL'}")
    wires = [r.checks["wire"] for r in results if r.checks.get("wire") is not None]
    if len(wires) > 1:
        print(f"  first move (full) {wires[0]:,} B; later moves mean {sum(wires[1:]) / len(wires[1:]):,.0f} B "
              f"(ratio {sum(wires[1:]) / len(wires[1:]) / wires[0]:.4f})")


def parse_durations(text: str) -> dict[str, float]:
    out = {}
    for item in filter(None, text.split(",")):
        kind, _, value = item.partition("=")
        if kind not in DURATION_KINDS:
            raise SystemExit(f"--durations: unknown kind {kind!r}; known: {', '.join(DURATION_KINDS)}")
        out[kind] = float(value)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lab", help="lab name (default: $LABMIG_LAB, else labmig)")
    ap.add_argument("--trials", type=int, default=3, help="trials per case (per step for step-kill)")
    ap.add_argument("--start", type=int, default=1, help="number of the first trial (to replay one)")
    ap.add_argument("--cases", default=",".join(ALL_CASES), help="cases to run: " + ", ".join(ALL_CASES))
    ap.add_argument("--steps", default=",".join(CRASH_POINTS), help="crash points of step-kill")
    ap.add_argument("--round-trips", type=int, default=5, help="there-and-back pairs of the round trip")
    ap.add_argument("--seed", type=int, help="seed of the random draws (default: a random one, printed)")
    ap.add_argument("--durations", default="", help="normal-run wall times instead of measuring them, "
                    "e.g. migrate=9.1,revert=1.9,confirm=1.2,confirm-delete=1.6")
    ap.add_argument("--pause-while", metavar="FILE", help="before each trial, wait while FILE exists")
    ap.add_argument("--json", metavar="FILE")
    args = ap.parse_args(argv)
    cases = [c for c in args.cases.split(",") if c]
    unknown = sorted(set(cases) - set(ALL_CASES))
    if unknown:
        ap.error(f"unknown case(s) {', '.join(unknown)}; known: {', '.join(ALL_CASES)}")
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1 << 31)
    from labmig.lab import LocalLab

    lab = LocalLab(args.lab)
    c = Campaign(lab, GUEST, INDEX, Path(tempfile.mkdtemp(prefix="labmig-cold-journal-")), seed=seed,
                 durations=parse_durations(args.durations),
                 pause_while=Path(args.pause_while) if args.pause_while else None)
    c.wait_quiet()
    lab.up()
    c.make_guest()
    out: dict[str, Any] = {"lab": lab.name, "seed": seed, "trials": args.trials, "start": args.start,
                           "cases": cases}
    rows: dict[str, list[TrialResult]] = {}
    print(f"cold-migration fault campaign on lab {lab.name!r}, seed {seed}, {args.trials} trial(s) per case "
          f"from #{args.start}; journals in {c.journal_root}", flush=True)
    try:
        for name in cases:
            print(f"\n== {name}", flush=True)
            if name == "step-kill":
                rows[name] = step_kills(c, [s for s in args.steps.split(",") if s], args.start, args.trials)
            elif name == "round-trip":
                rows[name] = round_trip(c, 2 * args.round_trips, on_move=lambda k, r: line("round-trip", k, r))
            elif name == "copy":
                c.wait_quiet()
                out["copy"] = copy_figures(c)
                print_copy(out["copy"])
            else:
                rows[name] = random_cases(c, name, args.start, args.trials)
    finally:
        lab.remove_guest(GUEST)
        shutil.rmtree(c.work, ignore_errors=True)
    if rows.get("step-kill"):
        print_steps(rows["step-kill"])
    if rows.get("round-trip"):
        print_round_trip(rows["round-trip"])
    out["summary"] = summary(rows)
    out["passed"] = sum(s["passed"] for s in out["summary"].values())
    out["total"] = sum(s["trials"] for s in out["summary"].values())
    out["durations"] = c.durations
    durations = ",".join(f"{k}={v:.2f}" for k, v in sorted(c.durations.items()))
    print(f"\nnormal-run wall times: {durations or 'none measured'}")
    print(f"replay trial N of a case: python -m bench.bench_cold_crash --lab {lab.name} --seed {seed} "
          f"--cases CASE --start N --trials 1" + (f" --durations {durations}" if durations else ""))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2, default=str)
    return 0 if out["passed"] == out["total"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
