"""Live migration on the local lab: the fault campaign, a round trip, and shared vs block storage.

Fault matrix (``labmig.live.faultcases.FAULT_CASES``): the destination's libvirtd or
incoming QEMU killed, the link cut in pre-copy, under auto-converge (once the throttle is
on) and after the switch to post-copy, ``labmig abort``. Each trial is a migration capped
at 10 MiB/s (below the guest's dirty rate, so it cannot finish on its own) broken once 16
MiB were sent (auto-converge: once QEMU throttles), then checked on both hosts: the VM
runs on exactly one host (the source, except after post-copy) and is paused nowhere, the
other host holds nothing of it, its disk's sha256 is what it was, the guest's memory
checker ran and counts no error; then a retry without the fault, checked the same way.

Command-line processes (``labmig.live.faultprocs.CLI_CASES``): SIGINT and SIGKILL of
``labmig migrate live``, and a second ``labmig migrate live`` of a VM one is migrating.

Round trip (``faultprocs.round_trip``): a local-disk guest migrated there and back N
times; every move completes, the disk is unchanged, the source's copy is removed.

Storage: the same guest shape with a shared disk and with a local disk, uncapped, side by
side; ratios block/shared.

Each campaign prints one row per trial and a table per case: trials passed, mean seconds
from the fault to the verified end state, ``detected_after`` where it applies (seconds
from the fault to labmig's first abort/rollback event; for SIGKILL, until ``labmig status``
listed it). The peer of the matrix is the same guest migrated without a fault or cap.

    python -m bench.bench_live_faults [--trials 2] [--cases a,b] [--cli-cases a,b]
        [--round-trips 5] [--disk local|shared] [--no-storage] [--pause-while FILE] [--json FILE]

``--pause-while FILE``: before every trial, wait while FILE exists (a machine shared with
timed runs). Needs a lab up (``labmig lab up``; LABMIG_LAB picks which).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from typing import Any, Callable

from labmig.lab import GuestSpec, LocalLab
from labmig.live.faultcases import FAULT_CASES, migrate, other, resume_postcopy, run_case
from labmig.live.faultcheck import Trial, observe
from labmig.live.faultprocs import CLI_CASES, round_trip

MiB = 2**20
CAP = 10 * MiB
DIRTY = 12_000_000
PAUSE: list[str] = []


def make_guest(lab: LocalLab, name: str, index: int, disk: str = "shared") -> Any:
    try:
        lab.remove_guest(name)
    except Exception:
        pass
    spec = GuestSpec(name=name, index=index, memory=128 * MiB, dirty_rate=DIRTY, wss=24 * MiB, disk=disk)
    return lab.create_guest(spec, host="lab1", timeout=180)


def wait_quiet() -> None:
    for path in PAUSE:
        announced = False
        while os.path.exists(path):
            if not announced:
                print(f"  (waiting while {path} exists)", flush=True)
                announced = True
            time.sleep(20)


def restore_lab(lab: LocalLab) -> None:
    """Whatever a trial that raised left broken: the link up, both libvirt daemons running."""
    from labmig.lab import inject, libvirtd

    inject(lab, "link-restore")
    for name in ("lab1", "lab2"):
        if not lab.host(name).libvirtd_pid():
            print(f"  (starting {name}'s libvirtd again)", flush=True)
            libvirtd.start(lab.host(name).layout)


def fit_for_next(lab: LocalLab, guest: Any) -> tuple[Any, str]:
    """The guest as the next trial needs it: on one host, paused nowhere, nothing of it elsewhere.

    Otherwise it is removed from both hosts and booted again (said in the returned words)."""
    restore_lab(lab)
    end = observe(lab, guest.name)
    here = end.single
    leftover = here is not None and guest.spec.disk == "local" and guest.disk_outside(other(here)).exists()
    if here is not None and end.on(other(here)).state == "absent" and not leftover:
        return guest, ""
    words = f"guest recreated for the next trial (it was: {end.words()}{'; disk left on the other host' if leftover else ''})"
    print(f"  {words}", flush=True)
    return make_guest(lab, guest.name, guest.spec.index, guest.spec.disk), words


def guarded(case: str, number: int, fn: Callable[..., Trial], /, *args: Any, **kwargs: Any) -> Trial:
    """The trial ``fn(*args, **kwargs)`` runs; one that raised is a failed trial saying what it raised."""
    try:
        return fn(*args, **kwargs)
    except Exception as exc:
        return Trial(case, number, problems=[f"the trial raised {type(exc).__name__}: {exc}"])


def _secs(value: float | None) -> str:
    return f"{value:7.1f}" if value is not None else f"{'-':>7}"


def print_row(t: Trial) -> None:
    what = t.problems[0] if t.problems else t.message
    print(f"{t.case:<22} {t.trial:>3}  {'pass' if t.passed else 'FAIL':<4} {_secs(t.to_end_state)} "
          f"{_secs(t.detected_after)}  {what[:150]}", flush=True)


def print_header(title: str) -> None:
    print(f"\n{title}\n{'case':<22} {'#':>3}  {'ok':<4} {'to end':>7} {'detect':>7}  what (first problem, else the words)",
          flush=True)


def summarise(trials: list[Trial], title: str) -> dict[str, Any]:
    """The table per case (passed/trials, mean seconds to the end state, detected_after), and its JSON."""
    cases: dict[str, list[Trial]] = {}
    for t in trials:
        cases.setdefault(t.case, []).append(t)
    print(f"\n{title}\n{'case':<22} {'passed':>8}  {'to end state':>12}  {'detected after':>16}  "
          "what happened (last failed trial, else last trial)")
    out: dict[str, Any] = {}
    for name, ts in cases.items():
        passed = sum(t.passed for t in ts)
        ends = [t.to_end_state for t in ts if t.to_end_state is not None]
        detected = [t.detected_after for t in ts if t.detected_after is not None]
        mean_end = statistics.mean(ends) if ends else None
        det = f"{statistics.mean(detected):5.1f} s (max {max(detected):.1f})" if detected else "-"
        last = next((t for t in reversed(ts) if not t.passed), ts[-1])
        words = "; ".join(last.problems) if last.problems else last.message
        print(f"{name:<22} {passed:>3} / {len(ts):<3} {_secs(mean_end):>10} s  {det:>16}  {words[:160]}")
        out[name] = {"passed": passed, "trials": len(ts), "mean_seconds_to_end_state": mean_end,
                     "detected_after": detected, "last_words": words}
    total = sum(t.passed for t in trials)
    print(f"{'all':<22} {total:>3} / {len(trials):<3}", flush=True)
    return {"cases": out, "passed": total, "trials": len(trials), "runs": [t.to_dict() for t in trials]}


def _after_postcopy(lab: LocalLab, guest: Any, trial: Trial) -> None:
    """A post-copy trial that left the VM nowhere in one piece: try libvirt's post-copy resume, as
    an operator would, and record what happened (the trial stays failed)."""
    if not trial.case.startswith("cut-link-postcopy") or observe(lab, guest.name).single:
        return
    src = trial.details.get("source", "lab1")
    words = resume_postcopy(lab, guest, src, other(src))
    trial.details["operator_postcopy_resume"] = words
    print(f"  operator's post-copy resume (not labmig): {words}", flush=True)


def fault_matrix(lab: LocalLab, cases: list[str], trials: int, disk: str) -> dict[str, Any]:
    guest = make_guest(lab, "bfault", 56, disk)
    try:
        clean = []
        for _ in range(2):
            src = guest.running_on()
            r = migrate(guest, src, other(src))
            assert r.completed, r.message
            clean.append(r.total_time)
        clean_time = statistics.mean(clean)
        print(f"peer: the same guest ({disk} disk) migrated without a fault or cap: {clean_time:.2f} s "
              f"(mean of {len(clean)})", flush=True)
        print_header(f"fault matrix ({disk} disk, capped at {CAP // MiB} MiB/s)")
        runs: list[Trial] = []
        for name in cases:
            for i in range(1, trials + 1):
                wait_quiet()
                src = guest.running_on()
                out = guarded(name, i, run_case, lab, guest, name, max_bandwidth=CAP, trial=i)
                out.details["source"] = src
                print_row(out)
                if not out.passed:
                    print(f"    after the fault: {out.end}\n    labmig said: {out.details.get('labmig_said', '')}",
                          flush=True)
                    _after_postcopy(lab, guest, out)
                runs.append(out)
                guest, words = fit_for_next(lab, guest)
                if words:
                    out.details["repair"] = words
        report = summarise(runs, "fault matrix, per case")
        report["clean_move_seconds"] = clean_time
        return report
    finally:
        lab.remove_guest(guest.name)


def cli_campaign(lab: LocalLab, cases: list[str], trials: int, disk: str) -> dict[str, Any]:
    guest = make_guest(lab, "bfault", 56, disk)
    try:
        print_header(f"labmig as a process ({disk} disk, capped at {CAP // MiB} MiB/s)")
        runs: list[Trial] = []
        for name in cases:
            fn: Callable[..., Trial] = CLI_CASES[name]
            for i in range(1, trials + 1):
                wait_quiet()
                t = guarded(name, i, fn, lab, guest, i)
                print_row(t)
                if not t.passed:
                    print(f"    end: {t.end}", flush=True)
                runs.append(t)
                guest, words = fit_for_next(lab, guest)
                if words:
                    t.details["repair"] = words
        return summarise(runs, "labmig as a process, per case")
    finally:
        lab.remove_guest(guest.name)


def round_trip_campaign(lab: LocalLab, round_trips: int) -> dict[str, Any]:
    wait_quiet()
    guest = make_guest(lab, "bround", 57, "local")
    try:
        print_header(f"round trip of a local-disk guest: {round_trips} x there and back")
        runs = round_trip(lab, guest, moves=2 * round_trips, on_trial=print_row)
        return summarise(runs, "round trip, per check")
    finally:
        lab.remove_guest(guest.name)


def storage_side_by_side(lab: LocalLab) -> dict[str, Any]:
    wait_quiet()
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


def _names(text: str, known: dict[str, Any], what: str) -> list[str]:
    names = [n for n in text.split(",") if n]
    unknown = [n for n in names if n not in known]
    if unknown:
        raise SystemExit(f"unknown {what}: {', '.join(unknown)} (known: {', '.join(known)})")
    return names


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--trials", type=int, default=2, help="trials per fault case and per process case")
    parser.add_argument("--cases", default=",".join(FAULT_CASES), help="fault cases, comma-separated ('' for none)")
    parser.add_argument("--cli-cases", default=",".join(CLI_CASES), help="process cases, comma-separated")
    parser.add_argument("--round-trips", type=int, default=5, help="there-and-back moves of the round trip (0: none)")
    parser.add_argument("--disk", choices=("local", "shared"), default="local", help="the fault guests' disk")
    parser.add_argument("--no-storage", action="store_true", help="skip the shared-vs-block comparison")
    parser.add_argument("--pause-while", action="append", default=[], metavar="FILE",
                        help="before each trial, wait while FILE exists")
    parser.add_argument("--json", metavar="FILE")
    args = parser.parse_args(argv)
    cases = _names(args.cases, FAULT_CASES, "fault cases")
    cli_cases = _names(args.cli_cases, CLI_CASES, "process cases")
    PAUSE[:] = args.pause_while
    lab = LocalLab()
    lab.require_up()
    t0 = time.monotonic()
    report: dict[str, Any] = {"lab": lab.name, "trials": args.trials, "disk": args.disk}
    if cases:
        report["fault_matrix"] = fault_matrix(lab, cases, args.trials, args.disk)
    if cli_cases:
        report["processes"] = cli_campaign(lab, cli_cases, args.trials, args.disk)
    if args.round_trips:
        report["round_trip"] = round_trip_campaign(lab, args.round_trips)
    if not args.no_storage:
        report["storage"] = storage_side_by_side(lab)
    report["seconds"] = time.monotonic() - t0
    parts = [report[k] for k in ("fault_matrix", "processes", "round_trip") if k in report]
    passed, total = sum(p["passed"] for p in parts), sum(p["trials"] for p in parts)
    report.update(passed=passed, total=total)
    print(f"\nall campaigns: {passed} / {total} trials passed in {report['seconds'] / 60:.1f} min")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(report, fh, indent=2, default=str)
    return 0 if passed == total else 1


if __name__ == "__main__":
    raise SystemExit(main())
