"""``labmig simulate``: run a migration plan in the simulator, one run or a sweep.

    register(subparsers)   adds the subcommand; every plan field and every
                           strategy option is a ``--flag`` taking units
    run(args)              builds the plan, runs it (every run, one or a sweep's, as a
                           spec through the simulator backend, labmig.backends), prints
                           a table, JSON, a timeline CSV and/or a plot

Choices come from the registries (STRATEGIES, WORKLOADS); option flags come
from the strategies' option dataclasses, so a new option shows up here alone.
``--link-rate`` is the capacity of the path between the hosts, ``--max-bandwidth``
QEMU's cap on the migration stream; ``--bandwidth`` is the old, deprecated word
for the link rate (it says so). ``--dirty-rate`` without ``--workload`` means
uniform writes over the working set.
"""
from __future__ import annotations

import argparse
import csv
import itertools
import json
import logging
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

from ..backends import SimulatorBackend
from ..errors import InvalidInput
from ..model import MigrationResult
from ..report import result_text, text_table
from ..sim.plan import DEPRECATED_PARAMETERS, PARAMETERS, Plan
from ..sim.workloads import WORKLOADS
from ..spec import MigrationSpec
from ..strategies import STRATEGIES, option_fields
from ..strategies.base import parse_option
from ..units import format_duration, format_rate, format_size, parse_duration, parse_rate, parse_size

log = logging.getLogger(__name__)

_PARAM_HELP = {
    "memory": "guest RAM, e.g. 8GiB", "page-size": "page size, e.g. 4KiB", "vcpus": "vCPUs",
    "disk-size": "disk size, e.g. 20GiB", "device-state": "device state sent in the pause, e.g. 1MiB",
    "dirty-rate": "page writes per second in bytes, e.g. 200MiB/s", "wss": "writable working set, e.g. 1GiB",
    "hot-fraction": "hotcold: share of the working set that is hot", "hot-share": "hotcold: share of writes on it",
    "zero-fraction": "share of memory that is zero pages", "delta-fraction": "share of a page one rewrite changes",
    "trace": "trace workload: JSON (interval, dirty_pages) or .npz (interval, bitmaps)",
    "link-rate": "capacity of the path between the hosts, e.g. 10Gbit/s",
    "max-bandwidth": "QEMU's cap on the migration stream (max-bandwidth), e.g. 50MiB/s; 0 = no cap",
    "rtt": "round-trip time, e.g. 0.5ms",
    "stream-limit": "bytes/s one migration stream can push (CPU bound), e.g. 1GiB/s",
    "storage": "shared, or local (the disk moves too)", "disk-dirty-rate": "disk writes during migration, e.g. 20MiB/s",
    "disk-bandwidth": "disk read/write speed, e.g. 500MiB/s",
    "stale-fraction": "cold delta: share of disk blocks the destination lacks",
    "seed": "random seed (runs are deterministic for a seed)", "max-time": "give up after this virtual time",
}


def _strategy_options() -> dict[str, tuple[dict[str, Any], list[str]]]:
    """option name -> (metadata, strategies that take it)."""
    table: dict[str, tuple[dict[str, Any], list[str]]] = {}
    for sname, cls in STRATEGIES.items():
        for name, _default, meta in option_fields(cls.Options):
            table.setdefault(name, (meta, []))[1].append(sname)
    return table


def _esc(text: str) -> str:
    """argparse formats help with %; registry texts may contain a literal one."""
    return text.replace("%", "%%")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "simulate", help="simulate a live or cold migration at any scale",
        description="Simulate a migration plan in virtual time (QEMU's pre-copy, post-copy, auto-converge, "
                    "XBZRLE, Nova's policy, cold migration). Sizes take units (8GiB), rates too "
                    "(10Gbit/s, 200MiB/s), durations (300ms).")
    p.add_argument("--plan", metavar="FILE.json", help="start from this plan (flags override its fields)")
    p.add_argument("--strategy", choices=list(STRATEGIES), metavar="NAME",
                   help=_esc("migration strategy (default precopy): " +
                             "; ".join(f"{name}: {cls.description}" for name, cls in STRATEGIES.items())))
    p.add_argument("--workload", choices=list(WORKLOADS), metavar="KIND",
                   help=_esc("how the guest writes memory (default idle): " +
                             "; ".join(f"{name}: {cls.description}" for name, cls in WORKLOADS.items())))
    for name, (_section, _attr, _parse) in PARAMETERS.items():
        if name in ("strategy", "workload"):
            continue
        p.add_argument(f"--{name}", dest=f"param_{name}", metavar="VALUE", help=_PARAM_HELP.get(name))
    p.add_argument("--bandwidth", dest="deprecated_bandwidth", metavar="VALUE",
                   help="deprecated: here it means --link-rate")
    group = p.add_argument_group("strategy options (QEMU / Nova names)")
    for name, (meta, owners) in sorted(_strategy_options().items()):
        flag = "--" + name.replace("_", "-")
        owners_text = "all but cold" if len(owners) == len(STRATEGIES) - 1 and "cold" not in owners \
            else ", ".join(owners)
        help_text = f"{meta.get('help', '')} [{owners_text}]"
        group.add_argument(flag, dest=f"opt_{name}", metavar="VALUE", help=_esc(help_text))
    p.add_argument("--sweep", action="append", default=[], metavar="PARAM=a,b,c",
                   help="run once per value (repeat for a grid) and print a comparison table; "
                        "PARAM is a flag name without -- (e.g. link-rate, max-bandwidth, dirty-rate, strategy, "
                        "downtime-limit); "
                        "FROM..TO:N gives N evenly spaced values")
    p.add_argument("--json", action="store_true", help="print the result(s) as JSON")
    p.add_argument("--csv", metavar="FILE.csv", help="write the timeline (one run) or the comparison (sweep) as CSV")
    p.add_argument("--plot", metavar="FILE.png", help="plot the timeline (or the sweep) to a PNG")
    p.add_argument("--show-plan", action="store_true", help="print the plan before the result")
    p.set_defaults(func=run)


def build_plan(args: argparse.Namespace) -> Plan:
    if args.plan:
        try:
            plan = Plan.from_json(Path(args.plan).read_text())
        except OSError as exc:
            raise InvalidInput(f"cannot read plan {args.plan}: {exc.strerror}", "give an existing JSON file") from exc
    else:
        plan = Plan()
    if args.strategy:
        plan = plan.with_param("strategy", args.strategy)
    if getattr(args, "deprecated_bandwidth", None) is not None:
        if getattr(args, "param_link-rate", None) is not None:
            raise InvalidInput("--bandwidth and --link-rate both given", "give --link-rate only")
        print("labmig simulate: --bandwidth is deprecated; here it means --link-rate (the capacity of the "
              "path between the hosts); QEMU's cap on the migration stream is --max-bandwidth", file=sys.stderr)
        setattr(args, "param_link-rate", args.deprecated_bandwidth)
    for name in PARAMETERS:
        value = getattr(args, f"param_{name}", None)
        if value is not None:
            plan = plan.with_param(name, value)    # a dirty rate on an idle guest makes it uniform
    if args.workload:
        plan = plan.with_param("workload", args.workload)
    options = dict(plan.options)
    for name in _strategy_options():
        value = getattr(args, f"opt_{name}", None)
        if value is not None:
            options[name] = value
    return replace(plan, options=options).validated()


def parse_sweeps(specs: list[str]) -> list[tuple[str, list[tuple[str, Any]]]]:
    """``PARAM=a,b,c`` or ``PARAM=FROM..TO:N`` (N evenly spaced values) -> (name, [(label, value)])."""
    sweeps = []
    for spec in specs:
        name, sep, values = spec.partition("=")
        items = [v.strip() for v in values.split(",") if v.strip()]
        if not sep or not name or not items:
            raise InvalidInput(f"cannot read --sweep {spec!r}",
                               "write it like --sweep link-rate=1Gbit/s,10Gbit/s or dirty-rate=50MiB/s..2GiB/s:20")
        name = name.strip().lstrip("-")
        known_opts = _strategy_options()
        if name.replace("_", "-") in DEPRECATED_PARAMETERS:
            name = DEPRECATED_PARAMETERS[name.replace("_", "-")]
        if name.replace("-", "_") not in known_opts and name.replace("_", "-") not in PARAMETERS:
            raise InvalidInput(f"--sweep: unknown parameter {name!r}",
                               "use a plan flag (memory, dirty-rate, link-rate, max-bandwidth, strategy …) "
                               "or a strategy option")
        expanded: list[tuple[str, Any]] = []
        for item in items:
            if ".." in item:
                expanded.extend(_sweep_range(name, item))
            else:
                expanded.append((item, item))
        sweeps.append((name, expanded))
    return sweeps


def _sweep_range(name: str, item: str) -> list[tuple[str, Any]]:
    lo_text, _, rest = item.partition("..")
    hi_text, sep, count_text = rest.partition(":")
    if not sep or not count_text.strip().isdigit() or int(count_text) < 2:
        raise InvalidInput(f"cannot read the range {item!r} in --sweep {name}", "write FROM..TO:N, e.g. 1GiB..8GiB:8")
    key = name.replace("_", "-")
    if key in PARAMETERS:
        parse = PARAMETERS[key][2]
        units: dict[Callable[..., Any], str] = {parse_size: "size", parse_rate: "rate", parse_duration: "duration"}
        unit = units.get(parse, "float")
    else:
        unit = _strategy_options()[name.replace("-", "_")][0].get("unit", "float")
        parse = lambda v: parse_option(unit, name, v)  # noqa: E731
    fmt = {"size": format_size, "rate": format_rate, "duration": format_duration}.get(unit, lambda v: f"{v:g}")
    lo, hi = float(parse(lo_text)), float(parse(hi_text))
    values = [lo + (hi - lo) * i / (int(count_text) - 1) for i in range(int(count_text))]
    if unit in ("size", "int"):
        values = [float(round(v)) for v in values]
    return [(fmt(v), v) for v in values]


def _check_options(plan: Plan, sweeping_strategy: bool) -> None:
    """Reject an option the chosen strategy does not take (unless strategies are swept)."""
    owners = _strategy_options()
    for name in plan.options:
        key = name.replace("-", "_")
        if key not in owners:
            raise InvalidInput(f"unknown option {name!r}", "see `labmig simulate --help` for strategy options")
        if not sweeping_strategy and plan.strategy not in owners[key][1]:
            raise InvalidInput(f"option --{key.replace('_', '-')} does not apply to strategy {plan.strategy!r}",
                               f"it belongs to: {', '.join(owners[key][1])}")


def run(args: argparse.Namespace) -> int:
    plan = build_plan(args)
    sweeps = parse_sweeps(args.sweep)
    sweeping_strategy = any(name == "strategy" for name, _ in sweeps)
    _check_options(plan, sweeping_strategy)
    if args.show_plan and not args.json:
        print(plan.describe())
        print()
    backend = SimulatorBackend()
    if not sweeps:
        result = backend.run(MigrationSpec.from_plan(plan))
        if args.json:
            print(result.to_json())
        else:
            print_result(result)
        if args.csv:
            Path(args.csv).write_text(result.timeline_csv())
        if args.plot:
            plot_timeline(result, args.plot)
        return 0
    rows: list[tuple[dict[str, str], MigrationResult]] = []
    for combo in itertools.product(*[[(name, lv) for lv in values] for name, values in sweeps]):
        p = plan
        for name, (_label, value) in combo:
            p = p.with_param(name, value)
        labels = {name: label for name, (label, _value) in combo}
        rows.append((labels, backend.run(MigrationSpec.from_plan(_own_options(p)))))
    if args.json:
        print(json.dumps([{"params": params, "result": r.to_dict()} for params, r in rows], indent=2))
    else:
        print_sweep(rows)
    if args.plot:
        plot_sweep(rows, args.plot)
    if args.csv:
        write_sweep_csv(rows, args.csv)
    return 0


def _own_options(plan: Plan) -> Plan:
    """``plan`` with only the options its strategy declares: a sweep over strategies gives
    each the same options, and each takes its own (the others were checked to belong to one)."""
    own = {name for name, _default, _meta in option_fields(STRATEGIES[plan.strategy].Options)}
    return replace(plan, options={k: v for k, v in plan.options.items() if k.replace("-", "_") in own})


def write_sweep_csv(rows: list[tuple[dict[str, str], MigrationResult]], path: str) -> None:
    """One line per run: the swept values, then the totals in seconds and bytes."""
    names = list(rows[0][0]) if rows else []
    with open(path, "w", newline="") as out:
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(names + ["outcome", "total_time", "downtime", "bytes_total", "iterations",
                                 "postcopy_faults", "fault_wait_time", "max_throttle_pct"])
        for params, r in rows:
            writer.writerow([params[n] for n in names] + [
                str(r.outcome), r.total_time, r.downtime, r.bytes_total, r.iterations,
                r.postcopy_faults, r.fault_wait_time, r.max_throttle_pct])


def print_result(result: MigrationResult, out: Any = None) -> None:
    print(result_text(result), file=out or sys.stdout)


def sweep_table(rows: list[tuple[dict[str, str], MigrationResult]]) -> list[list[str]]:
    names = list(rows[0][0]) if rows else []
    table = [names + ["outcome", "total", "downtime", "sent", "passes", "faults", "throttle"]]
    for params, r in rows:
        table.append([params[n] for n in names] + [
            str(r.outcome), format_duration(r.total_time), format_duration(r.downtime),
            format_size(r.bytes_total), str(r.iterations), str(r.postcopy_faults),
            f"{r.max_throttle_pct:.0f} %" if r.max_throttle_pct else "-"])
    return table


def print_sweep(rows: list[tuple[dict[str, str], MigrationResult]], out: Any = None) -> None:
    header, *body = sweep_table(rows)
    print(text_table(body, header=header), file=out or sys.stdout)


def plot_timeline(result: MigrationResult, path: str) -> None:
    """The run's timeline as the panel draws it (:func:`labmig.widgets.plots.result_timeline_figure`)."""
    from ..widgets.plots import result_timeline_figure

    title = (f"{result.strategy}: {result.outcome}, total {format_duration(result.total_time)}, "
             f"downtime {format_duration(result.downtime)}")
    result_timeline_figure(result, title).savefig(path, dpi=100)


def plot_sweep(rows: list[tuple[dict[str, str], MigrationResult]], path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [", ".join(params.values()) for params, _ in rows]
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(max(6, len(rows) * 0.6), 6), sharex=True)
    x = range(len(rows))
    ax1.bar([i - 0.2 for i in x], [r.total_time for _, r in rows], width=0.4, label="total time")
    ax1.bar([i + 0.2 for i in x], [r.downtime for _, r in rows], width=0.4, label="downtime")
    ax1.set_yscale("log")
    ax1.set_ylabel("seconds")
    ax1.legend()
    ax2.bar(list(x), [r.bytes_total / 2**30 for _, r in rows],
            color=["tab:green" if r.completed else "tab:red" for _, r in rows])
    ax2.set_ylabel("GiB sent (red: not completed)")
    ax2.set_xticks(list(x))
    ax2.set_xticklabels(labels, rotation=45, ha="right")
    ax2.set_xlabel(", ".join(rows[0][0]) if rows else "")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
