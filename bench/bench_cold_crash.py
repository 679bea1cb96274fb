"""Cold migration on the local lab: kill labmig at every step, recover, count the passes.

For each crash point of the flow (``labmig.cold.migration.CRASH_POINTS``) a child
``labmig migrate cold`` is SIGKILLed right after that step is journaled, then
``labmig recover`` runs; a trial passes when the VM runs on exactly one host and
the source disk is intact (bit-identical, or — when the guest booted again from
it — identical but for its boot counter, exactly one higher). Then the copy
itself: a first migration (full copy, the destination empty) against the way
back (the destination holds the older copy), bytes counted on the ssh pipes, and
rsync over the same ssh link on the same change as the peer; the link's own
interface counters give what crossed it with ssh's and TCP's overhead.

    python -m bench.bench_cold_crash [--trials 3] [--steps a,b] [--json FILE]
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import tempfile
import time
from collections import defaultdict

from labmig.cold.finish import confirm
from labmig.cold.migration import CRASH_POINTS, ColdMigration, ColdPlan, ColdRunOptions
from labmig.cold.trials import crash_trial, make_guest, wait_boot

GUEST, INDEX = "bcold", 63
BLOCK = 64 * 1024


def crash_matrix(lab, guest, steps, trials, journal):
    rows = defaultdict(list)
    for step in steps:
        for _ in range(trials):
            r = crash_trial(lab, guest, step, journal)
            rows[step].append(r)
            print(f"  {step:<20} {'pass' if r.ok else 'FAIL'}  {r.seconds:5.1f} s  {r.detail}", flush=True)
    return rows


def rsync_peer(lab, guest) -> dict:
    """rsync --inplace over the lab's ssh from lab2's current disk onto a copy of lab1's older one."""
    import shutil

    from labmig.lab.netns import host_cmd
    from labmig.lab.sshd import config_path

    old = guest.disk_outside("lab1")
    scratch_inside = guest.disk.replace(".img", "-peer.img")
    scratch = lab.host("lab1").outside(scratch_inside)
    shutil.copyfile(old, scratch)
    try:
        argv = host_cmd(lab.layout.host("lab2")) + [
            "rsync", "--inplace", "--no-whole-file", "--ignore-times", "--stats",
            "-e", f"ssh -F {config_path(lab.layout)}",
            guest.disk, f"lab1:{scratch_inside}"]
        t = time.monotonic()
        out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
        seconds = time.monotonic() - t
        same = open(scratch, "rb").read() == open(guest.disk_outside("lab2"), "rb").read()
    finally:
        os.unlink(scratch)
    sent = int(re.search(r"Total bytes sent: ([\d,]+)", out).group(1).replace(",", ""))
    recv = int(re.search(r"Total bytes received: ([\d,]+)", out).group(1).replace(",", ""))
    return {"bytes": sent + recv, "seconds": seconds, "identical": same}


def link_bytes(lab) -> int:
    """Bytes both ways on lab1's end of the inter-host link (ssh, TCP/IP and encryption included)."""
    from labmig.lab.netns import LINK_DEV

    out = subprocess.run(["ip", "-n", lab.layout.host("lab1").netns, "-s", "-j", "link", "show", LINK_DEV],
                         capture_output=True, text=True, check=True).stdout
    stats = json.loads(out)[0]["stats64"]
    return int(stats["rx"]["bytes"]) + int(stats["tx"]["bytes"])


def copy_figures(lab, guest, journal):
    """Full copy vs the way back with 5 changed blocks; rsync on the same change as the peer."""
    os.environ["LABMIG_JOURNAL_DIR"] = journal
    # Crash trials leave lab2 an older copy (kept as a seed): remove it, so the first copy is full.
    stale = guest.disk_outside("lab2")
    for path in (stale, stale.with_name(f".{stale.name}.incomplete")):
        if path.exists():
            path.unlink()
    opts = ColdRunOptions(shutdown_timeout="1s")
    link0 = link_bytes(lab)
    with ColdMigration(ColdPlan(GUEST, "lab1", "lab2", opts)) as mig:
        there = mig.run()
    link_full = link_bytes(lab) - link0
    confirm(GUEST)
    wait_boot(guest, guest.boot_counter("lab2"))
    with open(guest.disk_outside("lab2"), "r+b") as f:
        for i in range(5):
            f.seek((1 << 20) + i * 16 * BLOCK)
            f.write(os.urandom(100))
    peer = rsync_peer(lab, guest)
    link0 = link_bytes(lab)
    with ColdMigration(ColdPlan(GUEST, "lab2", "lab1", opts)) as mig:
        back = mig.run()
    link_delta = link_bytes(lab) - link0
    confirm(GUEST)
    wait_boot(guest, guest.boot_counter("lab1"))
    disk = back.extra["disks"][0]
    return {"full_bytes": there.bytes_by_phase["disk"], "full_seconds": there.extra["phases"]["disk"],
            "delta_bytes": back.bytes_by_phase["disk"], "delta_seconds": back.extra["phases"]["disk"],
            "changed_bytes": disk["blocks_sent"] * BLOCK, "blocks_sent": disk["blocks_sent"],
            "blocks_total": disk["blocks_total"], "rsync_bytes": peer["bytes"], "rsync_seconds": peer["seconds"],
            "rsync_identical": peer["identical"], "link_full": link_full, "link_delta": link_delta,
            "downtime_full": there.downtime, "downtime_delta": back.downtime}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=3)
    ap.add_argument("--steps", default=",".join(CRASH_POINTS))
    ap.add_argument("--json", metavar="FILE")
    args = ap.parse_args(argv)
    from labmig.lab import LocalLab

    lab = LocalLab()
    lab.up()
    journal = tempfile.mkdtemp(prefix="labmig-cold-journal-")
    guest = make_guest(lab, GUEST, INDEX)
    out = {"lab": lab.name, "trials": args.trials}
    try:
        print(f"crash trials on lab {lab.name!r}: {args.trials} per step")
        rows = crash_matrix(lab, guest, [s for s in args.steps.split(",") if s], args.trials, journal)
        print(f"\n{'killed after':<20} {'passed':>8}  {'VM ended on':<12} mean time")
        total = passed = 0
        for step, results in rows.items():
            ok = sum(r.ok for r in results)
            total += len(results)
            passed += ok
            ends = ",".join(sorted({r.ended_on or '?' for r in results}))
            mean = sum(r.seconds for r in results) / len(results)
            print(f"{step:<20} {ok:>3} / {len(results):<3}  {ends:<12} {mean:5.1f} s")
        print(f"{'all steps':<20} {passed:>3} / {total:<3}")
        out["crash"] = {s: [r.to_dict() for r in rs] for s, rs in rows.items()}
        out["crash_passed"], out["crash_total"] = passed, total
        fig = copy_figures(lab, guest, journal)
        out["copy"] = fig
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
    finally:
        lab.remove_guest(GUEST)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2, default=str)
    return 0 if out.get("crash_passed") == out.get("crash_total") else 1


if __name__ == "__main__":
    raise SystemExit(main())
