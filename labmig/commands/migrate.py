"""``labmig migrate live VM --to HOST``, ``labmig abort VM``, ``labmig status``.

    register()          adds ``migrate`` (with one sub-command per kind), ``abort``, ``status``
    MIGRATE_KINDS       modules that add a kind of migration: each has
                        ``register_migrate(kinds_subparsers)``; this module adds ``live``
    add_live_options()  the live options, in virsh's words, reusable by other front ends
    options_from_args() argparse namespace → LiveOptions

Words follow virsh and Nova: --bandwidth, --max-downtime, --postcopy,
--auto-converge, --compression, --parallel-connections, --block-migration
(virsh --copy-storage-all), --no-persist, --keep-source.

While a live migration runs, SIGTERM and SIGHUP (``kill PID``, a closed terminal, a
supervisor stopping labmig) stop it as Ctrl-C does: the job is aborted and rolled back,
and the command exits with 128 + the signal's number. Killed outright instead, labmig
left libvirt's job running with nobody to steer, time out or abort it.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import signal
import sys
from typing import Any, Iterator

from ..errors import InvalidInput, LabmigError
from ..report import result_text
from ..units import format_duration

# Other kinds of migration register as siblings of `migrate live` by adding their module here.
MIGRATE_KINDS: tuple[str, ...] = ("labmig.commands.cold",)


def register(subparsers: Any) -> None:
    migrate = subparsers.add_parser("migrate", help="migrate a VM between hosts (live, …)",
                                    description="Migrate a VM between two libvirt hosts.")
    kinds = migrate.add_subparsers(dest="kind", metavar="KIND")
    kinds.required = True
    register_migrate(kinds)
    for name in MIGRATE_KINDS:
        importlib.import_module(name).register_migrate(kinds)

    abort = subparsers.add_parser("abort", help="abort a running migration of a VM (it stays on its source)")
    abort.add_argument("vm", metavar="VM")
    abort.add_argument("--host", action="append", help="host(s) to look on (default: the lab's hosts)")
    abort.set_defaults(func=cmd_abort)

    status = subparsers.add_parser("status", help="VMs on each host, with any migration job in progress")
    status.add_argument("--host", action="append", help="host name or libvirt URI (default: the lab's hosts)")
    status.add_argument("--json", action="store_true", help="print JSON")
    status.set_defaults(func=cmd_status)


def register_migrate(kinds: Any) -> None:
    from ..live.policies import POLICIES

    live = kinds.add_parser(
        "live", help="live migration: the VM keeps running while its memory is copied",
        description="Live-migrate a running VM as OpenStack Nova's libvirt driver does: pre-checks, "
                    "peer-to-peer pre-copy steered by a policy, rollback on failure. "
                    "Policies: " + "; ".join(f"{n}: {c.description}" for n, c in POLICIES.items()),
    )
    live.add_argument("vm", metavar="VM", help="the VM's libvirt name")
    live.add_argument("--to", required=True, metavar="HOST", help="destination: lab host name or libvirt URI")
    live.add_argument("--from", dest="source", metavar="HOST", help="source (default: where the VM runs)")
    add_live_options(live)
    live.add_argument("--json", action="store_true", help="print the result as JSON")
    live.add_argument("--timeline-csv", metavar="FILE", help="also write the timeline as CSV")
    live.add_argument("--check-only", action="store_true", help="run the pre-checks and stop")
    live.set_defaults(func=cmd_migrate_live)


def add_live_options(parser: argparse.ArgumentParser) -> None:
    from ..live.policies import POLICIES

    g = parser.add_argument_group("live migration options")
    g.add_argument("--bandwidth", "--max-bandwidth", dest="bandwidth", metavar="RATE", help="cap on the migration stream, e.g. 50MiB/s")
    g.add_argument("--max-downtime", "--downtime-limit", dest="max_downtime", metavar="DURATION", help="longest pause allowed, e.g. 300ms")
    g.add_argument("--postcopy", default="off", metavar="MODE",
                   help="switch to post-copy: off, now, after:N (passes) or on-timeout")
    g.add_argument("--auto-converge", action="store_true", help="let QEMU throttle the guest's CPU")
    g.add_argument("--auto-converge-initial", "--cpu-throttle-initial", dest="auto_converge_initial", type=int, metavar="PCT", help="first CPU throttle step (QEMU: 20)")
    g.add_argument("--auto-converge-increment", "--cpu-throttle-increment", dest="auto_converge_increment", type=int, metavar="PCT", help="throttle increment per pass (QEMU: 10)")
    g.add_argument("--compression", metavar="METHOD", help="xbzrle, mt, or with parallel channels zlib/zstd")
    g.add_argument("--parallel-connections", "--multifd-channels", dest="parallel_connections", type=int, default=0, metavar="N", help="multifd channels")
    storage = g.add_mutually_exclusive_group()
    storage.add_argument("--block-migration", dest="block_migration", action="store_const", const=True,
                         help="copy local disks too (virsh --copy-storage-all)")
    storage.add_argument("--shared-storage", dest="block_migration", action="store_const", const=False,
                         help="the disks are on shared storage: move memory only")
    g.add_argument("--no-persist", action="store_true", help="do not define the VM on the destination")
    g.add_argument("--keep-source", action="store_true", help="keep the definition on the source")
    g.add_argument("--policy", default="nova", choices=sorted(POLICIES), help="who steers the run (default: nova)")
    g.add_argument("--completion-timeout", metavar="DURATION", help="give up (or force) after this long")
    g.add_argument("--timeout-action", choices=("abort", "force-complete"),
                   help="on completion timeout: abort, or force-complete (post-copy if allowed, else pause); "
                        "default: force-complete with --postcopy on-timeout, else abort")


def options_from_args(args: argparse.Namespace) -> Any:
    from ..live.plan import LiveOptions

    return LiveOptions(
        bandwidth=args.bandwidth, max_downtime=args.max_downtime, postcopy=args.postcopy,
        auto_converge=args.auto_converge, auto_converge_initial=args.auto_converge_initial,
        auto_converge_increment=args.auto_converge_increment, compression=args.compression,
        parallel_connections=args.parallel_connections, block_migration=args.block_migration,
        persistent=not args.no_persist, undefine_source=not args.keep_source, policy=args.policy,
        completion_timeout=args.completion_timeout, timeout_action=args.timeout_action,
    )


def _hosts(specs: list[str] | None) -> list[Any]:
    from ..hosts import lab_hosts, resolve_host

    if specs:
        return [resolve_host(s) for s in specs]
    hosts = lab_hosts()
    if not hosts:
        raise InvalidInput("no hosts to look at", "bring the lab up (labmig lab up) or name hosts with --host URI")
    return hosts


def find_source(vm: str, hosts: list[Any]) -> Any:
    """The host on which ``vm`` is active; active on two hosts means it is migrating."""
    from ..errors import PrecheckFailed
    from ..hosts import HostUnreachable

    active = []
    for host in hosts:
        try:
            dom = host.domain(vm)
        except HostUnreachable:
            continue
        if dom is not None and dom.isActive():
            active.append(host)
    if len(active) == 1:
        return active[0]
    if len(active) > 1:
        raise PrecheckFailed(f"{vm} is active on {' and '.join(h.name for h in active)}: it is already migrating",
                             f"wait for it, or stop it with `labmig abort {vm}`")
    names = ", ".join(h.name for h in hosts)
    raise InvalidInput(f"unknown VM {vm!r}: it runs on none of {names}",
                       "`labmig status` lists the VMs on each host")


class Terminated(KeyboardInterrupt):
    """A stop signal other than Ctrl-C; handled as Ctrl-C is (abort, roll back)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


@contextlib.contextmanager
def stop_signals_roll_back() -> Iterator[None]:
    """While the block runs, SIGTERM and SIGHUP raise :class:`Terminated` in the main thread.

    Only the first one does: the abort and rollback it starts are bounded in time, and a
    second signal must not cut them short. A signal the caller set to be ignored (nohup)
    stays ignored.
    """
    stopping: list[int] = []

    def on_signal(signum: int, _frame: Any) -> None:
        if not stopping:
            stopping.append(signum)
            raise Terminated(signum)

    previous = {}
    for signum in STOP_SIGNALS:
        if signal.getsignal(signum) is not signal.SIG_IGN:
            previous[signum] = signal.signal(signum, on_signal)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def cmd_migrate_live(args: argparse.Namespace) -> int:
    from ..hosts import resolve_host
    from ..live.migration import LiveMigration
    from ..live.plan import LivePlan
    from ..live.probe import probe_for
    from ..live.progress import LiveProgress

    options = options_from_args(args)
    destination = resolve_host(args.to)
    if args.source:
        source = resolve_host(args.source)
    else:
        source = find_source(args.vm, _hosts(None))
    if source.uri == destination.uri:
        raise InvalidInput(f"{args.vm} already runs on {destination.name}: source and destination are the same",
                           "pick another host with --to")
    plan = LivePlan(args.vm, source.name, destination.name, options)
    progress = LiveProgress(enabled=None if not args.json else False)
    probe = None if args.check_only else probe_for(args.vm)
    with LiveMigration(plan, source, destination, on_point=progress.on_point,
                       on_event=progress.on_event, probe=probe) as mig:
        report = mig.report
        if args.check_only:
            if args.json:
                print(json.dumps({"prechecks": report.to_list(), "block_migration": report.block_migration}, indent=2))
            else:
                for check in report.checks:
                    print(check.line())
            return 0
        try:
            with stop_signals_roll_back():
                result = mig.run()
        except Terminated as exc:
            print(f"labmig migrate: stopped by {exc}: the migration was aborted", file=sys.stderr)
            return 128 + exc.signum
        finally:
            progress.close()
    if args.timeline_csv:
        with open(args.timeline_csv, "w", encoding="utf-8") as fh:
            fh.write(result.timeline_csv())
    if args.json:
        print(result.to_json())
    else:
        print(result_text(result))
    return 0 if result.completed else 1


def cmd_abort(args: argparse.Namespace) -> int:
    from ..live.migration import find_migrating

    found = find_migrating(args.vm, _hosts(args.host))
    if found is None:
        raise InvalidInput(f"{args.vm} is not migrating on any host", "`labmig status` shows running jobs")
    host, dom = found
    try:
        host.call("aborting the job", dom.abortJob)
    except Exception as exc:
        raise LabmigError(f"could not abort the migration of {args.vm} on {host.name}: {exc}",
                          "it may have just finished; check with labmig status") from exc
    print(f"aborted the migration of {args.vm} on {host.name}; it stays there")
    return 0


def host_status(host: Any) -> dict[str, Any]:
    import libvirt

    from ..hosts import HostUnreachable

    entry: dict[str, Any] = {"host": host.name, "uri": host.uri, "reachable": True, "vms": []}
    try:
        conn = host.connect()
        doms = host.call("listing VMs", conn.listAllDomains, 0)
    except (HostUnreachable, LabmigError) as exc:
        entry.update(reachable=False, error=str(exc))
        return entry
    names = {libvirt.VIR_DOMAIN_RUNNING: "running", libvirt.VIR_DOMAIN_PAUSED: "paused",
             libvirt.VIR_DOMAIN_SHUTOFF: "shut off"}
    for dom in doms:
        try:
            state = dom.state()[0]
            vm = {"name": dom.name(), "state": names.get(state, str(state)), "persistent": bool(dom.isPersistent())}
            if dom.isActive():
                info = dom.jobInfo()
                if info[0] != libvirt.VIR_DOMAIN_JOB_NONE:
                    stats = dom.jobStats(0)
                    total = stats.get("memory_total", 0) or 1
                    vm["job"] = {"elapsed": stats.get("time_elapsed", 0) / 1000.0,
                                 "pass": stats.get("memory_iteration", 0),
                                 "memory_done_pct": round(100.0 * stats.get("memory_processed", 0) / total, 1),
                                 "memory_remaining": stats.get("memory_remaining", 0)}
        except libvirt.libvirtError:
            continue
        entry["vms"].append(vm)
    return entry


def cmd_status(args: argparse.Namespace) -> int:
    entries = [host_status(h) for h in _hosts(args.host)]
    if args.json:
        print(json.dumps(entries, indent=2))
        return 0
    for entry in entries:
        if not entry["reachable"]:
            print(f"{entry['host']}  ({entry['uri']})  UNREACHABLE")
            continue
        print(f"{entry['host']}  ({entry['uri']})")
        if not entry["vms"]:
            print("  (no VMs)")
        for vm in entry["vms"]:
            job = vm.get("job")
            extra = ""
            if job:
                extra = (f"  migrating: {format_duration(job['elapsed'])}, pass {job['pass']}, "
                         f"{job['memory_done_pct']}% of memory sent")
            print(f"  {vm['name']:<20} {vm['state']}{'' if vm['persistent'] else ' (transient)'}{extra}")
    return 0
