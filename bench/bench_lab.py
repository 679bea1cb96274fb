"""Benchmark of the local lab: bring-up times, and live migrations at two link bandwidths.

    python -m bench.bench_lab [--quick] [--name labmigbench]

Part 1 brings a lab of its own up three ways: cold (no guest build or QEMU
capability cache: the kernel package is downloaded and the guest built), warm
(after ``down``, caches kept) and again while up (the idempotent no-op), and
prints each against the cold one. The Debian packages are only checked here; on
a fresh machine their install adds its own time (printed as the 'packages' step
of the cold run when it happens).

Part 2 migrates one guest back and forth between the hosts with libvirt
peer-to-peer live migration, idle and dirtying memory, with the link shaped to
two bandwidths, and prints QEMU's own figures (total time, downtime, bytes,
passes), the longest gap a client saw, and the guest's memory-check verdict;
each dirtying row is also given as a ratio to the idle row at the same bandwidth.
Run as root. Takes a few minutes; the machine's load changes the figures.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time

MiB = 2**20


def bring_up(name: str) -> list[tuple[str, float, dict]]:
    from labmig.lab import LocalLab, guestbuild

    lab = LocalLab(name)
    lab.clean()
    rows = []
    with tempfile.TemporaryDirectory(prefix="labmig-bench-cache-") as cache:
        real_build = guestbuild.build_guest
        guestbuild.build_guest = lambda: real_build(cache=guestbuild.Path(cache))
        try:
            r = lab.up()
        finally:
            guestbuild.build_guest = real_build
    rows.append(("cold: new lab, no caches", r.seconds, r.steps))
    lab.down()
    r = lab.up()
    rows.append(("warm: after down, caches kept", r.seconds, r.steps))
    r = lab.up()
    rows.append(("again while up (no-op)", r.seconds, r.steps))
    return rows


def migrate(lab, guest, src: str, dst: str, timeout: float) -> dict:
    import libvirt

    from labmig.lab import SHARED_DISK_MIGRATE_FLAGS

    c1, c2 = lab.host(src).connect(), lab.host(dst).connect()
    try:
        dom = c1.lookupByName(guest.name)
        flags = (libvirt.VIR_MIGRATE_LIVE | libvirt.VIR_MIGRATE_PEER2PEER | libvirt.VIR_MIGRATE_PERSIST_DEST
                 | libvirt.VIR_MIGRATE_UNDEFINE_SOURCE | SHARED_DISK_MIGRATE_FLAGS)
        aborted = threading.Event()

        def watchdog():
            if not done.wait(timeout):
                aborted.set()
                try:
                    dom.abortJob()
                except libvirt.libvirtError:
                    pass
        done = threading.Event()
        threading.Thread(target=watchdog, daemon=True).start()
        probe = guest.start_probe(interval=0.02)
        t0 = time.monotonic()
        try:
            dom.migrateToURI3(lab.host(dst).migration_uri, {}, flags)
            ok = True
        except libvirt.libvirtError:
            ok = False
        wall = time.monotonic() - t0
        done.set()
        time.sleep(0.5)
        gap = probe.stop().max_gap
        if not ok:
            return {"outcome": "did not converge" if aborted.is_set() else "failed", "wall": wall, "gap": gap,
                    "where": src}
        stats = c2.lookupByName(guest.name).jobStats(libvirt.VIR_DOMAIN_JOB_STATS_COMPLETED)
        return {"outcome": "completed", "wall": wall, "gap": gap, "where": dst,
                "total": stats.get("time_elapsed", 0) / 1000, "downtime": stats.get("downtime", 0) / 1000,
                "bytes": stats.get("memory_processed", 0), "passes": stats.get("memory_iteration", 0)}
    finally:
        c1.close()
        c2.close()


def migrations(name: str, rates: list[int], dirty: list[int], timeout: float) -> list[dict]:
    from labmig.lab import GuestSpec, LocalLab

    lab = LocalLab(name)
    lab.up()
    spec = GuestSpec(name="benchguest", index=30, memory=256 * MiB, wss=64 * MiB, check_ms=1000)
    lab.remove_guest(spec.name)
    t0 = time.monotonic()
    guest = lab.create_guest(spec, host="lab1")
    print(f"guest boot to its ready marker (define + start + boot): {time.monotonic() - t0:.2f} s\n", flush=True)
    print(f"{'link':>12}  {'workload':<18} {'total':>9} {'downtime':>11} {'memory sent':>13} {'passes':>6}"
          f" {'client gap':>11} {'memerr':>6}")
    where = "lab1"
    rows = []
    try:
        for rate in rates:
            lab.shape_link(rate)
            for label, dr in [("idle", 0)] + [(f"dirty {d // MiB} MiB/s", d) for d in dirty]:
                guest.set_dirty_rate(dr)
                time.sleep(2)
                dst = "lab2" if where == "lab1" else "lab1"
                res = migrate(lab, guest, where, dst, timeout)
                where = res["where"]
                guest.set_dirty_rate(0)
                time.sleep(2.5)  # two full memory checks at the (new) place
                stat = guest.stat()
                res.update(link=rate, workload=label, errors=stat["errors"])
                rows.append(res)
                print(_row(res), flush=True)
    finally:
        lab.shape_link(None)
        lab.remove_guest(spec.name)
    return rows


def _row(r: dict) -> str:
    if r["outcome"] != "completed":
        return (f"{r['link'] // MiB:>6} MiB/s  {r['workload']:<18} {r['outcome']:<17} after {r['wall']:6.1f} s"
                f"  (guest stays on the source; client gap {r['gap']:.2f} s; memory errors {r['errors']})")
    return (f"{r['link'] // MiB:>6} MiB/s  {r['workload']:<18} {r['total']:7.2f} s {r['downtime'] * 1000:8.0f} ms"
            f" {r['bytes'] / MiB:9.1f} MiB {r['passes']:6d} {r['gap']:9.2f} s {r['errors']:6d}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="local lab benchmark")
    ap.add_argument("--name", default="labmigbench", help="lab name used by the benchmark (cleaned at the end)")
    ap.add_argument("--quick", action="store_true", help="skip the bring-up part")
    ap.add_argument("--dirty", default=[24 * MiB, 64 * MiB], type=int, nargs="+",
                    help="dirty rates of the dirtying rows, bytes/s")
    ap.add_argument("--timeout", default=30.0, type=float, help="abort a migration after this many seconds")
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("bench_lab needs root", file=sys.stderr)
        return 1
    from labmig.lab import LocalLab

    try:
        if not args.quick:
            print("== lab bring-up ==")
            rows = bring_up(args.name)
            base = rows[0][1]
            for label, secs, steps in rows:
                top = ", ".join(f"{k} {v:.1f}" for k, v in sorted(steps.items(), key=lambda kv: -kv[1])[:4])
                print(f"{label:<32} {secs:7.2f} s   x{secs / base:5.2f} of cold   (largest steps, s: {top})")
            print("(guest-build and warm run in worker threads beside the other steps)")
        print("\n== live migration (peer-to-peer, TCG guest 256 MiB, working set 64 MiB) ==")
        rows = migrations(args.name, [32 * MiB, 128 * MiB], args.dirty, args.timeout)
        print("\nratios (same run):")
        for rate in sorted({r["link"] for r in rows}):
            idle = next(r for r in rows if r["link"] == rate and r["workload"] == "idle")
            for r in rows:
                both_done = r["outcome"] == idle["outcome"] == "completed"
                if r["link"] == rate and r is not idle and both_done:
                    print(f"  {rate // MiB} MiB/s: {r['workload']} / idle: total x{r['total'] / idle['total']:.2f},"
                          f" bytes x{r['bytes'] / idle['bytes']:.2f}, passes {r['passes']} vs {idle['passes']}")
        idle = {r["link"]: r for r in rows if r["workload"] == "idle" and r["outcome"] == "completed"}
        if len(idle) == 2:
            slow, fast = (idle[k] for k in sorted(idle))
            print(f"  idle: {slow['link'] // MiB} MiB/s link / {fast['link'] // MiB} MiB/s link: total"
                  f" x{slow['total'] / fast['total']:.2f}")
    finally:
        LocalLab(args.name).clean()
    return 0


if __name__ == "__main__":
    sys.exit(main())
