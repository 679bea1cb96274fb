"""``labmig migrate live VM --to HOST``, ``labmig abort VM``, ``labmig status``.

    register()          adds ``migrate`` (with one sub-command per kind), ``abort``, ``status``
    MIGRATE_KINDS       modules that add a kind of migration: each has
                        ``register_migrate(kinds_subparsers)``; this module adds ``live``
    add_live_options()  the live options, in virsh's words, reusable by other front ends
    options_from_args() argparse namespace → LiveOptions
    spec_from_args()    argparse namespace → the MigrationSpec the live backend runs
    max_bandwidth_arg() --max-bandwidth, or the deprecated --bandwidth (said so on stderr)

Words follow virsh, QEMU and Nova: --max-bandwidth (QEMU's cap on the migration
stream; the old --bandwidth is a deprecated alias of it here), --link-rate (the
capacity of the path: on the local lab the link is shaped to it for the run),
--strategy, --max-downtime, --postcopy, --auto-converge, --compression,
--parallel-connections, --block-migration (virsh --copy-storage-all),
--no-persist, --keep-source. The run goes through labmig.backends.LiveBackend.

While a live migration runs, SIGTERM and SIGHUP (``kill PID``, a closed terminal, a
supervisor stopping labmig) stop it as Ctrl-C does: the job is aborted and rolled back,
and the command exits with 128 + the signal's number. Killed outright instead, labmig
left libvirt's job running with nobody to steer, time out or abort it.

``labmig status`` shows beside a VM the labmig process that holds its lock
(labmig.vmlock); ``labmig abort`` takes no lock (cmd_abort says why).
"""
from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import os
import signal
import sys
from typing import Any, Iterator

from ..errors import InvalidInput, LabmigError
from ..report import result_text
from ..units import format_duration, parse_rate

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
    status.add_argument("--json", action="store_true",
                        help='print JSON: {"hosts": [per host: its VMs, jobs, locks], "attention": [what to do]}')
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


def _live_strategies() -> list[str]:
    from ..strategies import STRATEGIES

    return [name for name, cls in STRATEGIES.items() if cls.kind == "live"]


def add_live_options(parser: argparse.ArgumentParser) -> None:
    from ..live.policies import POLICIES

    g = parser.add_argument_group("live migration options")
    g.add_argument("--strategy", choices=_live_strategies(), metavar="NAME",
                   help="a simulator strategy, run with its libvirt flags: " + ", ".join(_live_strategies()) +
                        " (default: what the options below amount to)")
    g.add_argument("--max-bandwidth", dest="max_bandwidth", metavar="RATE",
                   help="QEMU's cap on the migration stream (max-bandwidth), e.g. 50MiB/s")
    g.add_argument("--bandwidth", dest="deprecated_bandwidth", metavar="RATE",
                   help="deprecated: here it means --max-bandwidth")
    g.add_argument("--link-rate", dest="link_rate", metavar="RATE",
                   help="capacity of the path between the hosts, e.g. 1Gbit/s: on the local lab the link is "
                        "shaped to it for this run (and put back after); on other hosts only recorded")
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


def max_bandwidth_arg(args: argparse.Namespace, command: str = "labmig migrate live") -> float | None:
    """``--max-bandwidth`` in bytes/s (None: no cap), or the deprecated ``--bandwidth`` it replaces
    (with a note on stderr)."""
    old = getattr(args, "deprecated_bandwidth", None)
    value = getattr(args, "max_bandwidth", None)
    if old is not None:
        if value is not None:
            raise InvalidInput("--bandwidth and --max-bandwidth both given", "give --max-bandwidth only")
        print(f"{command}: --bandwidth is deprecated; here it means --max-bandwidth (QEMU's cap on the migration "
              "stream); the capacity of the path between the hosts is --link-rate", file=sys.stderr)
        value = old
    return None if value is None else parse_rate(value)


def options_from_args(args: argparse.Namespace) -> Any:
    from ..live.plan import LiveOptions

    return LiveOptions(
        max_bandwidth=max_bandwidth_arg(args), max_downtime=args.max_downtime, postcopy=args.postcopy,
        auto_converge=args.auto_converge, auto_converge_initial=args.auto_converge_initial,
        auto_converge_increment=args.auto_converge_increment, compression=args.compression,
        parallel_connections=args.parallel_connections, block_migration=args.block_migration,
        persistent=not args.no_persist, undefine_source=not args.keep_source, policy=args.policy,
        completion_timeout=args.completion_timeout, timeout_action=args.timeout_action,
    )


def spec_from_args(args: argparse.Namespace, source: str, destination: str, options: Any = None) -> Any:
    """The live MigrationSpec of ``labmig migrate live`` (see labmig.backends.live_spec)."""
    from ..backends import live_spec

    return live_spec(args.vm, source, destination, options or options_from_args(args),
                     strategy=args.strategy, link_rate=getattr(args, "link_rate", None))


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
    from ..backends import LiveBackend
    from ..hosts import resolve_host
    from ..live.progress import LiveProgress
    from ..placement import say_where
    from ..vmlock import VMBusy, holder

    options = options_from_args(args)
    busy = holder(args.vm)
    if busy is not None and busy.pid != os.getpid():   # before the hosts: mid-migration the VM is on both
        raise VMBusy(args.vm, busy)
    destination = resolve_host(args.to)
    if args.source:
        source = resolve_host(args.source)
    else:
        source = find_source(args.vm, _hosts(None))
    if source.uri == destination.uri:
        raise InvalidInput(f"{args.vm} already runs on {destination.name}: source and destination are the same",
                           "pick another host with --to")
    spec = spec_from_args(args, args.source or source.name, args.to, options)
    backend = LiveBackend()
    if args.check_only:
        report = backend.precheck(spec)
        if args.json:
            print(json.dumps({"prechecks": report.to_list(), **report.details}, indent=2))
        else:
            print("\n".join(report.lines()))
        report.raise_if_failed()
        return 0
    progress = LiveProgress(enabled=None if not args.json else False)
    try:
        with stop_signals_roll_back():
            result = backend.run(spec, on_point=progress.on_point, on_event=progress.on_event)
    except KeyboardInterrupt as exc:     # Ctrl-C, or Terminated (SIGTERM/SIGHUP), which is one
        progress.close()     # end the progress line before the last words
        if isinstance(exc, Terminated):
            print(f"labmig migrate: stopped by {exc}: the migration was aborted", file=sys.stderr)
        say_where(args.vm, [source, destination], sys.stderr)
        if not isinstance(exc, Terminated):
            raise
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
    """Cancel the VM's live migration job, without the VM's lock (labmig.vmlock).

    The lock is held by the migration being aborted, for as long as it runs: waiting for
    it would wait for the very thing abort is meant to stop. Taking no lock is safe: abort
    only asks libvirt to cancel the job (abortJob), libvirt serialises that with the job
    itself, and the migrating process, which still holds the lock, sees the job end and
    rolls back. Abort changes nothing else on either host.
    """
    from ..live.migration import find_migrating
    from ..vmlock import holder

    found = find_migrating(args.vm, _hosts(args.host))
    if found is None:
        busy = holder(args.vm)
        if busy is not None:
            raise InvalidInput(f"{args.vm} has no live migration job to abort; it is held by {busy.words()}",
                               "a cold migration stops and rolls back on Ctrl-C in its terminal; "
                               f"killed (kill {busy.pid}), it is rolled back by `labmig recover`")
        raise InvalidInput(f"{args.vm} is not migrating on any host", "`labmig status` shows running jobs")
    host, dom = found
    orphan = holder(args.vm) is None
    try:
        host.call("aborting the job", dom.abortJob)
    except Exception as exc:
        raise LabmigError(f"could not abort the migration of {args.vm} on {host.name}: {exc}",
                          "it may have just finished; check with labmig status") from exc
    print(f"aborted the migration of {args.vm} on {host.name}; it stays there")
    if orphan:
        _clean_after_orphan(args.vm, host, dom)
    return 0


def _clean_after_orphan(vm: str, source: Any, dom: Any) -> None:
    """The labmig that started the job is gone: remove the disks it had made on the destination.

    Its rollback would have; it recorded them beside the VM's lock (live.rollback.record_created).
    Only once the job has ended with the VM running on the source, and the destination holds
    no domain of that name: then those files are half-copied images and nothing else.
    """
    import time

    import libvirt

    from ..hosts import resolve_host
    from ..live.rollback import forget_created, read_created, remove_volumes
    from ..vmlock import vm_lock

    with vm_lock(vm, command=f"labmig abort {vm}"):
        record = read_created(vm)
        if record is None:
            return
        deadline = time.monotonic() + 30
        while source.call("reading the job", dom.jobInfo)[0] != libvirt.VIR_DOMAIN_JOB_NONE:
            if time.monotonic() > deadline:
                print(f"the job on {source.name} had not ended 30 s after the abort: disks made for it are left; "
                      "run `labmig abort` again", file=sys.stderr)
                return
            time.sleep(0.5)
        uri, volumes = record
        destination = resolve_host(uri)
        if source.call("reading the VM state", dom.state)[0] != libvirt.VIR_DOMAIN_RUNNING or \
                destination.domain(vm) is not None:
            print(f"{vm} is not running on {source.name} alone: the disks made on {destination.name} are left "
                  "as they are (`labmig status`)", file=sys.stderr)
            return
        left = remove_volumes(destination, volumes)
        forget_created(vm)
        removed = [p for p in (os.path.join(v.directory, v.name) for v in volumes) if p not in left]
        if removed:
            print(f"removed the half-copied disks its labmig (killed) had made on {destination.name}: "
                  f"{', '.join(removed)}")
        if left:
            print(f"could not remove on {destination.name}: {', '.join(left)}", file=sys.stderr)


def host_status(host: Any) -> dict[str, Any]:
    import libvirt

    from ..hosts import HostUnreachable
    from ..vmlock import holder

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
            busy = holder(vm["name"])
            if busy is not None:
                vm["locked_by"] = {"pid": busy.pid, "host": busy.host, "command": busy.command,
                                   "since": busy.started}
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


def needs_attention(entries: list[dict[str, Any]], journals: list[Any] | None = None) -> list[dict[str, str]]:
    """What ``status`` flags, each as {"vm", "what", "do"}, from the hosts' entries and the cold journals.

    - a live migration job with no labmig process holding the VM (its labmig was killed:
      libvirt goes on with nobody to time it out, switch to post-copy or roll it back);
    - an unfinished cold migration journal with no process holding the VM (interrupted);
    - a VM active on two hosts with no job on either (a split the tools could not close).
    """
    from ..vmlock import holder

    out: list[dict[str, str]] = []
    active: dict[str, list[str]] = {}
    jobs: set[str] = set()
    for entry in entries:
        for vm in entry["vms"]:
            if vm["state"] in ("running", "paused"):
                active.setdefault(vm["name"], []).append(entry["host"])
            if "job" in vm:
                jobs.add(vm["name"])
                if "locked_by" not in vm:
                    out.append({"vm": vm["name"], "what": f"a live migration job on {entry['host']} with no labmig "
                                "process steering it (the one that started it is gone)",
                                "do": f"`labmig abort {vm['name']}` stops it and the VM stays on {entry['host']}; "
                                      "or let it finish and run `labmig status` again"})
    for vm_name, hosts in active.items():
        if len(hosts) > 1 and vm_name not in jobs:
            out.append({"vm": vm_name, "what": f"active on {len(hosts)} hosts ({', '.join(hosts)}) with no migration job",
                        "do": "keep the copy that has the newest state (the running one, not a paused one) "
                              "and destroy the other with virsh; `labmig recover` first if it was a cold migration"})
    for journal in journals or []:
        try:
            state = journal.state()
        except LabmigError as exc:
            out.append({"vm": journal.vm, "what": f"a cold migration journal that cannot be read: {exc.message}",
                        "do": f"`labmig recover` reports it; the file is {journal.path}"})
            continue
        if state is None or state.finished or holder(journal.vm) is not None:
            continue
        if state.awaiting_confirm:
            out.append({"vm": journal.vm, "what": "a cold migration awaiting confirm",
                        "do": f"`labmig confirm {journal.vm}` or `labmig revert {journal.vm}`"})
        else:
            out.append({"vm": journal.vm, "what": f"a cold migration interrupted at '{state.last}' "
                        "(no labmig process is running it)",
                        "do": f"`labmig recover {journal.vm}` brings it to its source or its destination"})
    return out


def _cold_journals() -> list[Any]:
    try:
        from ..cold.journal import all_journals
    except ImportError:
        return []
    return all_journals()


def cmd_status(args: argparse.Namespace) -> int:
    from ..vmlock import Holder

    entries = [host_status(h) for h in _hosts(args.host)]
    attention = needs_attention(entries, _cold_journals())
    if args.json:
        print(json.dumps({"hosts": entries, "attention": attention}, indent=2))
        return 0
    for entry in entries:
        if not entry["reachable"]:
            print(f"{entry['host']}  ({entry['uri']})  UNREACHABLE: {entry.get('error', '')}")
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
            lock = vm.get("locked_by")
            if lock:
                extra += "  held by " + Holder(lock["pid"], lock["host"], lock["command"], lock["since"]).words()
            print(f"  {vm['name']:<20} {vm['state']}{'' if vm['persistent'] else ' (transient)'}{extra}")
    if attention:
        print("\nneeds attention:")
        for item in attention:
            print(f"  {item['vm']}: {item['what']}\n    do: {item['do']}")
    return 0
