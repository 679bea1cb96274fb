"""``labmig compare VM``: a live and a cold migration of the same guest, side by side, measured.

    register()  adds ``compare``: the VM goes live to the other host and comes back cold
                (confirmed), then the table prints (``--json`` for everything);
                ``--simulate`` fills the same table from the simulator instead, for the
                same ``--link-rate`` and ``--max-bandwidth`` (``--bandwidth`` is the old,
                deprecated word for the max bandwidth here). A live leg that does not
                complete stops the comparison: what happened and where the VM is are
                printed, no cold leg starts, and the exit status is 1
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from ..errors import InvalidInput


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "compare", help="live vs cold: migrate a VM both ways on the same link and print the table",
        description="Live-migrate VM to the other host, cold-migrate it back (confirmed), and print what "
                    "each cost: VM state, downtime (QEMU's and a client's), total time, bytes on the wire, "
                    "network and storage needs, what a failure leaves.")
    p.add_argument("vm", nargs="?", metavar="VM", help="the VM's libvirt name (not needed with --simulate)")
    p.add_argument("--to", metavar="HOST", help="the other host (default: the lab's other host)")
    p.add_argument("--from", dest="source", metavar="HOST", help="where the VM runs (default: found)")
    p.add_argument("--max-bandwidth", metavar="RATE",
                   help="QEMU's cap on the live migration stream (max-bandwidth), e.g. 50MiB/s")
    p.add_argument("--bandwidth", dest="deprecated_bandwidth", metavar="RATE",
                   help="deprecated: here it means --max-bandwidth")
    p.add_argument("--link-rate", metavar="RATE",
                   help="capacity of the path between the hosts, e.g. 1Gbit/s: the local lab's link is shaped "
                        "to it for both legs; with --simulate, the modelled link (default 1Gbit/s)")
    p.add_argument("--shutdown-timeout", default="60s", metavar="DURATION",
                   help="cold: graceful power-off deadline before forcing it (default 60s)")
    p.add_argument("--simulate", action="store_true", help="fill the table from the simulator (no lab needed)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_compare)


def cmd_compare(args: argparse.Namespace) -> int:
    from ..compare import LiveLegFailed, compare_on_hosts, compare_simulated
    from ..units import parse_rate
    from .migrate import max_bandwidth_arg

    max_bandwidth = max_bandwidth_arg(args, "labmig compare")
    if args.simulate:
        link: dict[str, Any] = {} if args.link_rate is None else {"link_rate": parse_rate(args.link_rate)}
        comp = compare_simulated(note="Simulated on request (--simulate).", **link, max_bandwidth=max_bandwidth or 0.0)
    else:
        if not args.vm:
            raise InvalidInput("no VM named", "give the VM to migrate, or --simulate")
        from ..cold.migration import ColdRunOptions
        from ..hosts import lab_hosts, resolve_host
        from ..live.plan import LiveOptions
        from .cold import find_defined

        source = resolve_host(args.source) if args.source else find_defined(args.vm)
        if args.to:
            destination = resolve_host(args.to)
        else:
            others = [h for h in lab_hosts() if h.uri != source.uri]
            if not others:
                raise InvalidInput("no other host to migrate to", "name one with --to HOST")
            destination = others[0]
        try:
            comp = compare_on_hosts(args.vm, args.source or source.name, args.to or destination.name,
                                    LiveOptions(max_bandwidth=max_bandwidth),
                                    ColdRunOptions(shutdown_timeout=args.shutdown_timeout), link_rate=args.link_rate)
        except LiveLegFailed as stop:
            if args.json:
                print(json.dumps({"stopped": stop.message, "live": stop.live.to_dict()}, indent=2))
            print(f"labmig compare: {stop.message}", file=sys.stderr)
            return 1
    print(json.dumps(comp.to_dict(), indent=2) if args.json else comp.render())
    return 0
