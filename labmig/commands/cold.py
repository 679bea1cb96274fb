"""``labmig migrate cold VM --to HOST``, ``labmig confirm VM``, ``labmig revert VM``, ``labmig recover``.

    register_migrate()  adds ``cold`` beside ``migrate live`` (see labmig.commands.migrate)
    register()          adds ``confirm``, ``revert`` and ``recover``

Words follow Nova's resize flow: a cold migration ends awaiting confirm (the VM
runs on the destination, the source keeps its disk); ``confirm`` drops the
source's copy, ``revert`` goes back to it. ``recover`` finishes whatever a killed
labmig left halfway, from the journal; it exits 1 when a journal could not be read
or recovered, or the hosts showed a state its journal does not allow (nothing done).
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from ..errors import InvalidInput
from ..report import result_text


def register_migrate(kinds: Any) -> None:
    cold = kinds.add_parser(
        "cold", help="cold migration: power off, copy the disks (changed blocks only), boot on the target",
        description="Cold-migrate a VM as Nova's migrate/resize does: shut it down (forced after a deadline), "
                    "copy its local disks to the destination through ssh sending only changed blocks, "
                    "define and boot it there, then wait for `labmig confirm` or `labmig revert`. "
                    "Every step is journaled; `labmig recover` finishes a run that was killed.")
    cold.add_argument("vm", metavar="VM", help="the VM's libvirt name")
    cold.add_argument("--to", required=True, metavar="HOST", help="destination: lab host name or libvirt URI")
    cold.add_argument("--from", dest="source", metavar="HOST", help="source (default: where the VM is defined)")
    g = cold.add_argument_group("cold migration options")
    g.add_argument("--shutdown-timeout", default="60s", metavar="DURATION",
                   help="wait this long for a graceful power-off, then force it (default 60s)")
    g.add_argument("--boot-timeout", default="120s", metavar="DURATION", help="wait this long for the guest to be up")
    g.add_argument("--block-size", default="64KiB", metavar="SIZE", help="delta-copy block size (default 64KiB)")
    g.add_argument("--verify", default="full", choices=("full", "sha256", "fast"),
                   help="how the copy is verified before the VM is defined there (default: full)")
    g.add_argument("--ready-marker", metavar="REGEX", help="console text meaning the guest is up")
    g.add_argument("--confirm", action="store_true", help="confirm at once when the guest is up")
    g.add_argument("--delete-source-disks", action="store_true", help="with --confirm: delete the source's disks")
    cold.add_argument("--json", action="store_true", help="print the result as JSON")
    cold.add_argument("--check-only", action="store_true", help="run the pre-checks and stop")
    cold.set_defaults(func=cmd_migrate_cold)


def register(subparsers: Any) -> None:
    c = subparsers.add_parser("confirm", help="confirm a cold migration: the VM stays on the destination")
    c.add_argument("vm", metavar="VM")
    c.add_argument("--delete-source-disks", action="store_true", help="also delete the disks left on the source")
    c.add_argument("--json", action="store_true", help="print JSON")
    c.set_defaults(func=cmd_confirm)
    r = subparsers.add_parser("revert", help="revert a cold migration: the VM goes back to its untouched source")
    r.add_argument("vm", metavar="VM")
    r.add_argument("--json", action="store_true", help="print JSON")
    r.set_defaults(func=cmd_revert)
    rc = subparsers.add_parser("recover", help="finish cold migrations that labmig left halfway (from the journal)")
    rc.add_argument("vm", nargs="?", metavar="VM", help="only this VM (default: every unfinished journal)")
    rc.add_argument("--json", action="store_true", help="print JSON")
    rc.set_defaults(func=cmd_recover)


def find_defined(vm: str) -> Any:
    """The lab host on which ``vm`` is defined (running or not)."""
    from ..hosts import HostUnreachable, lab_hosts

    hosts = lab_hosts()
    if not hosts:
        raise InvalidInput("no hosts to look at", "bring the lab up, or name the source with --from HOST")
    for host in hosts:
        try:
            if host.domain(vm) is not None:
                return host
        except HostUnreachable:
            continue
    raise InvalidInput(f"unknown VM {vm!r}: it is defined on none of {', '.join(h.name for h in hosts)}",
                       "`labmig status` lists the VMs on each host")


def cmd_migrate_cold(args: argparse.Namespace) -> int:
    """A cold migration through the cold backend (labmig.backends.ColdBackend), as compare runs one."""
    from dataclasses import fields

    from ..backends import ColdBackend
    from ..cold.migration import ColdRunOptions
    from ..hosts import resolve_host
    from ..progress import Progress
    from ..spec import VM, MigrationSpec

    # Parsed here, before any host is asked: a bad value is a usage error that changed nothing.
    options = ColdRunOptions(shutdown_timeout=args.shutdown_timeout, boot_timeout=args.boot_timeout,
                          block_size=args.block_size, verify=args.verify, ready_marker=args.ready_marker,
                          auto_confirm=args.confirm, delete_source_disks=args.delete_source_disks)
    if args.delete_source_disks and not args.confirm:
        raise InvalidInput("--delete-source-disks needs --confirm", "or pass it to `labmig confirm VM` later")
    destination = resolve_host(args.to)
    source = resolve_host(args.source) if args.source else find_defined(args.vm)
    if source.uri == destination.uri:
        raise InvalidInput(f"{args.vm} is already on {destination.name}: source and destination are the same",
                           "pick another host with --to")
    spec = MigrationSpec(vm=VM(name=args.vm), strategy="cold", source=source.name, destination=destination.name,
                         run_options={f.name: getattr(options, f.name) for f in fields(options)})
    show = not args.json and Progress(1).enabled
    backend = ColdBackend(progress=show)
    if args.check_only:
        report = backend.precheck(spec)
        print(json.dumps({"prechecks": report.lines()}, indent=2) if args.json else "\n".join(report.lines()))
        report.raise_if_failed()
        return 0

    def on_event(ev: Any) -> None:
        if show:
            print(f"[{ev.t:7.2f}s] {ev.kind}: {ev.message}", flush=True)

    try:
        result = backend.run(spec, on_event=on_event)
    except KeyboardInterrupt:
        from ..placement import say_where

        say_where(args.vm, [source, destination], sys.stderr)
        raise
    if args.json:
        print(result.to_json())
    else:
        print(result_text(result))
        if result.completed and not args.confirm:
            print(f"\nnext: `labmig confirm {args.vm}` to keep it on {destination.name}, "
                  f"or `labmig revert {args.vm}` to go back to {source.name}")
    if not result.completed:
        hint = result.extra.get("hint")
        print(f"labmig migrate: {result.message}" + (f"\n  hint: {hint}" if hint else ""), file=sys.stderr)
        return 1
    return 0


def _print(done: Any, as_json: bool) -> None:
    items = done if isinstance(done, list) else [done]
    if as_json:
        print(json.dumps([d.to_dict() for d in items], indent=2))
    elif not items:
        print("nothing to recover: no unfinished cold migration in the journal")
    else:
        for d in items:
            print(d.words())


def cmd_confirm(args: argparse.Namespace) -> int:
    from ..cold.finish import confirm
    _print(confirm(args.vm, delete_source_disks=args.delete_source_disks), args.json)
    return 0


def cmd_revert(args: argparse.Namespace) -> int:
    from ..cold.finish import revert
    _print(revert(args.vm), args.json)
    return 0


def cmd_recover(args: argparse.Namespace) -> int:
    """Prints what was done for each journal; exits 1 when any could not be recovered."""
    from ..cold.finish import recover
    done = recover(args.vm)
    _print(done, args.json)
    failed = [d.vm for d in done if d.failed]
    if failed:
        print(f"labmig recover: not recovered: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0
