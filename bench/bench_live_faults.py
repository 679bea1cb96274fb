"""Live migration on the local lab: the fault matrix with pass counts, and shared vs block storage.

Fault matrix: for each case of ``labmig.live.faultcases.FAULT_CASES`` (kill the
destination's libvirtd, kill its incoming QEMU, cut the link, abort from the CLI)
a migration capped at 10 MiB/s (below the guest's dirty rate, so it cannot finish
on its own) is broken once pass 1 has sent 16 MiB; a trial passes when the run did
not complete, the VM runs on the source only, the destination holds nothing, the
retry (uncapped) succeeds and the guest's own memory check reports no error. The
peer is the same guest migrated without a fault or cap, measured in the same run:
the time from start to a verified rollback is given as a ratio of it.

Storage: the same guest shape with a shared disk and with a local disk (block
migration, disk copied by QEMU's mirror), uncapped, side by side; ratios block/shared.

    python -m bench.bench_live_faults [--trials 3] [--cases a,b] [--no-storage] [--json FILE]

Needs a lab up (``labmig lab up``; LABMIG_LAB picks which).
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

from labmig.lab import GuestSpec, LocalLab
from labmig.live.faultcases import FAULT_CASES, migrate, run_case

MiB = 2**20
CAP = 10 * MiB
DIRTY = 12_000_000


def make_guest(lab: LocalLab, name: str, index: int, disk: str = "shared"):
    try:
        lab.remove_guest(name)
    except Exception:
        pass
    spec = GuestSpec(name=name, index=index, memory=128 * MiB, dirty_rate=DIRTY, wss=24 * MiB, disk=disk)
    return lab.create_guest(spec, host="lab1", timeout=180)


def other(host: str) -> str:
    return "lab2" if host == "lab1" else "lab1"


def fault_matrix(lab: LocalLab, cases: list[str], trials: int) -> dict:
    guest = make_guest(lab, "blive", 54)
    try:
        # Peer: the same guest migrated without a fault and without the cap (there and back).
        clean = []
        for _ in range(2):
            src = guest.running_on()
            r = migrate(guest, src, other(src))
            assert r.completed, r.message
            clean.append(r.total_time)
        clean_time = statistics.mean(clean)
        print(f"peer: the same guest migrated without a fault: {clean_time:.2f} s (mean of {len(clean)})", flush=True)
        rows = {}
        print(f"\n{'case':<19} {'trial':>5}  {'outcome':<12} {'source':<7} {'dst clean':<9} "
              f"{'retry':<6} {'mem err':>7} {'to rollback':>11}  result")
        for name in cases:
            outs = []
            for i in range(trials):
                out = run_case(lab, guest, name, max_bandwidth=CAP)
                outs.append(out)
                print(f"{name:<19} {i + 1:>5}  {out.outcome:<12} {_yn(out.on_source):<7} {_yn(out.destination_clean):<9} "
                      f"{_yn(out.retry_ok):<6} {out.memory_errors:>7} {out.seconds:9.2f} s  "
                      f"{'pass' if out.passed else 'FAIL'}", flush=True)
            rows[name] = outs
        print(f"\n{'case':<19} {'passed':>8}  {'rollback time':>13}  {'x clean move':>12}  what happened (last trial)")
        summary = {}
        for name, outs in rows.items():
            passed = sum(o.passed for o in outs)
            mean = statistics.mean(o.seconds for o in outs)
            print(f"{name:<19} {passed:>3} / {len(outs):<3} {mean:11.2f} s  {mean / clean_time:11.2f}x  {outs[-1].message}")
            summary[name] = {"passed": passed, "trials": len(outs), "mean_seconds_to_rollback": mean,
                             "ratio_to_clean_move": mean / clean_time, "last_message": outs[-1].message,
                             "outcomes": [o.outcome for o in outs]}
        total = sum(s["passed"] for s in summary.values())
        runs = sum(s["trials"] for s in summary.values())
        print(f"{'all':<19} {total:>3} / {runs:<3}")
        return {"clean_capped_seconds": clean_time, "cases": summary, "passed": total, "trials": runs}
    finally:
        lab.remove_guest(guest.name)


def storage_side_by_side(lab: LocalLab) -> dict:
    shared = make_guest(lab, "blive", 54, "shared")
    local = make_guest(lab, "blive-l", 55, "local")
    try:
        res = {}
        for label, g in (("shared", shared), ("block", local)):
            src = g.running_on()
            r = migrate(g, src, other(src), probe=True)
            assert r.completed, r.message
            res[label] = r
        s, b = res["shared"], res["block"]
        rows = [
            ("total time (s)", s.total_time, b.total_time),
            ("QEMU downtime (ms)", s.downtime * 1000, b.downtime * 1000),
            ("client-seen (ms)", (s.client_interruption or 0) * 1000, (b.client_interruption or 0) * 1000),
            ("memory sent (MiB)", (s.bytes_total - s.bytes_by_phase.get("disk", 0)) / MiB,
             (b.bytes_total - b.bytes_by_phase.get("disk", 0)) / MiB),
            ("disk sent (MiB)", s.bytes_by_phase.get("disk", 0) / MiB, b.bytes_by_phase.get("disk", 0) / MiB),
        ]
        print(f"\n{'':<20} {'shared':>10} {'block':>10} {'block/shared':>13}")
        for label, x, y in rows:
            ratio = f"{y / x:12.2f}x" if x else f"{'-':>13}"
            print(f"{label:<20} {x:10.2f} {y:10.2f} {ratio}")
        return {label: {"shared": x, "block": y} for label, x, y in rows}
    finally:
        lab.remove_guest(shared.name)
        lab.remove_guest(local.name)


def _yn(flag: bool) -> str:
    return "yes" if flag else "NO"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--cases", default=",".join(FAULT_CASES), help="comma-separated fault cases")
    parser.add_argument("--no-storage", action="store_true", help="skip the shared-vs-block comparison")
    parser.add_argument("--json", metavar="FILE")
    args = parser.parse_args(argv)
    lab = LocalLab()
    lab.require_up()
    t0 = time.monotonic()
    report: dict = {"lab": lab.name, "fault_matrix": fault_matrix(lab, args.cases.split(","), args.trials)}
    if not args.no_storage:
        report["storage"] = storage_side_by_side(lab)
    report["seconds"] = time.monotonic() - t0
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(report, fh, indent=2)
    fm = report["fault_matrix"]
    return 0 if fm["passed"] == fm["trials"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
