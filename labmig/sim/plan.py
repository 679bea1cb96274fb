"""A migration plan for the simulator: plain data that only describes.

    Plan           one run: what moves, over what, how (strategy name + options), seed
    ├── VM         memory, page size, vCPUs, disk size, device state
    ├── Workload   what the guest does to its memory (kind from sim.workloads.WORKLOADS)
    ├── Link       link rate (capacity of the path), round-trip time, per-stream limit
    └── Storage    shared, or local (the disk moves too) and how fast it is written
    max_bandwidth  QEMU's cap on the migration stream (``max-bandwidth``); 0 = no cap

A plan holds no state and does no work: :func:`labmig.sim.run.simulate` makes it
real. Sizes are bytes, rates bytes per second, times seconds; ``from_dict``
also reads the strings users type ("8GiB", "10Gbit/s", "300ms"). Plans round-
trip through ``to_dict``/``from_dict`` and JSON, and ``describe()`` prints them.
``PARAMETERS`` maps the short names the CLI and ``--sweep`` use ("memory",
"dirty-rate", "link-rate", "max-bandwidth" …) to plan fields and their units.

Two words, two ideas: the *link rate* is what the path between the hosts
carries (``Link.link_rate``); *max bandwidth* is the cap QEMU puts on the
migration stream (``Plan.max_bandwidth``). The old word ``bandwidth`` (for the
link) is still read, as a deprecated alias with a warning. A dirty rate given
without a workload kind means uniform writes over the working set.

A plan is the simulator's view of a :class:`labmig.spec.MigrationSpec`
(``spec.to_plan()``); it stays importable on its own for scripts and notebooks.
"""
from __future__ import annotations

import json
import warnings
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, Callable

from ..errors import InvalidInput
from ..units import format_rate, format_size, parse_duration, parse_rate, parse_size

GiB = 1 << 30


@dataclass(frozen=True)
class VM:
    """The guest that moves."""

    name: str = "vm1"
    memory: int = 2 * GiB            # bytes of guest RAM
    page_size: int = 4096            # target page size (the dirty-log granularity)
    vcpus: int = 2
    disk_size: int = 10 * GiB        # bytes of the root disk
    device_state: int = 0            # bytes of device state sent during the pause

    @property
    def pages(self) -> int:
        return self.memory // self.page_size


@dataclass(frozen=True)
class Workload:
    """What the guest does to its memory; ``kind`` names an entry of WORKLOADS.

    ``dirty_rate`` is bytes/s of page writes (``dirty_rate / page_size`` page
    writes a second). For ``uniform`` each write hits a random page of the
    working set; for ``sequential`` writes sweep the working set in order, so
    every write dirties a distinct page until it wraps; ``hotcold`` sends
    ``hot_share`` of the writes to the first ``hot_fraction`` of the working
    set; ``trace`` replays ``trace`` (a JSON or .npz file, see sim.workloads).
    """

    kind: str = "idle"
    dirty_rate: float = 0.0          # bytes/s of page writes
    wss: int = 0                     # writable working set in bytes; 0 = all memory
    hot_fraction: float = 0.1
    hot_share: float = 0.9
    zero_fraction: float = 0.0       # share of memory that is zero pages (never written)
    delta_fraction: float = 0.05     # share of a page's bytes one rewrite changes (XBZRLE)
    trace: str = ""


def deprecated(old: str, new: str) -> None:
    """Warn that ``old`` is a deprecated name for ``new`` (shown once per place)."""
    warnings.warn(f"{old} is deprecated: it means {new}; write {new}", FutureWarning, stacklevel=3)


@dataclass(frozen=True, init=False)
class Link:
    """The path between the two hosts: its rate, its round trip, one stream's limit.

    ``Link(bandwidth=…)`` and ``link.bandwidth`` still work, with a warning:
    they are the link rate.
    """

    link_rate: float = 10e9 / 8      # bytes/s the path carries
    rtt: float = 0.0005              # seconds
    stream_limit: float = 0.0        # bytes/s one migration stream can push (CPU bound); 0 = none

    def __init__(self, link_rate: float | None = None, rtt: float = 0.0005, stream_limit: float = 0.0,
                 *, bandwidth: float | None = None) -> None:
        if bandwidth is not None:
            deprecated("Link(bandwidth=...)", "Link(link_rate=...)")
            if link_rate is not None and link_rate != bandwidth:
                raise InvalidInput("both link_rate and its old name bandwidth were given, with different values",
                                   "give link_rate only")
            link_rate = bandwidth
        object.__setattr__(self, "link_rate", 10e9 / 8 if link_rate is None else link_rate)
        object.__setattr__(self, "rtt", rtt)
        object.__setattr__(self, "stream_limit", stream_limit)

    @property
    def bandwidth(self) -> float:
        """Deprecated name of :attr:`link_rate`."""
        deprecated("Link.bandwidth", "Link.link_rate")
        return self.link_rate


@dataclass(frozen=True)
class Storage:
    """Where the disk lives. Local storage means the disk is copied too."""

    shared: bool = True
    disk_dirty_rate: float = 0.0     # bytes/s the guest writes to its disk
    disk_bandwidth: float = 0.0      # bytes/s the disks read/write; 0 = not the bottleneck
    stale_fraction: float = 1.0      # share of disk blocks the destination does not already hold


@dataclass(frozen=True)
class Plan:
    """One simulated migration."""

    vm: VM = field(default_factory=VM)
    workload: Workload = field(default_factory=Workload)
    link: Link = field(default_factory=Link)
    storage: Storage = field(default_factory=Storage)
    strategy: str = "precopy"
    options: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    max_time: float = 3600.0         # virtual seconds before a run is called off
    max_bandwidth: float = 0.0       # bytes/s QEMU may use for the migration stream; 0 = no cap

    # -- (de)serialising ---------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Plan":
        if not isinstance(data, dict):
            raise InvalidInput(f"a plan must be a mapping, not {type(data).__name__}",
                               "give a JSON object with vm, workload, link, storage, strategy")
        unknown = set(data) - {f.name for f in fields(cls)}
        if unknown:
            raise InvalidInput(f"unknown plan keys: {', '.join(sorted(unknown))}",
                               f"known keys: {', '.join(f.name for f in fields(cls))}")
        kwargs: dict[str, Any] = {}
        for name, klass in (("vm", VM), ("workload", Workload), ("link", Link), ("storage", Storage)):
            if name in data:
                kwargs[name] = _section(klass, name, data[name])
        if isinstance(data.get("workload"), dict) and "kind" not in data["workload"] \
                and "workload" in kwargs and kwargs["workload"].dirty_rate > 0:
            kwargs["workload"] = replace(kwargs["workload"], kind="uniform")
        for name in ("strategy", "seed", "max_time", "max_bandwidth"):
            if name in data:
                kwargs[name] = data[name]
        kwargs["options"] = dict(data.get("options") or {})
        if "max_bandwidth" in kwargs["options"]:
            deprecated("options.max_bandwidth", "the plan's max_bandwidth")
            kwargs.setdefault("max_bandwidth", kwargs["options"].pop("max_bandwidth"))
        for name, (_part, _attr, parse) in _TOP_LEVEL.items():
            if name in kwargs:
                try:
                    kwargs[name] = parse(kwargs[name])
                except InvalidInput as exc:
                    raise InvalidInput(f"plan field {name}: {exc.message}", exc.hint) from exc
        return cls(**kwargs).validated()

    @classmethod
    def from_json(cls, text: str) -> "Plan":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InvalidInput(f"plan is not valid JSON: {exc}", "check the file with a JSON linter") from exc
        return cls.from_dict(data)

    # -- checking ----------------------------------------------------------
    def validated(self) -> "Plan":
        """Return self after checking every field; raise InvalidInput naming the bad one."""
        vm, wl, link, st = self.vm, self.workload, self.link, self.storage
        _require(vm.page_size >= 512 and vm.page_size & (vm.page_size - 1) == 0, "vm.page_size",
                 vm.page_size, "a power of two of at least 512 bytes, e.g. 4KiB")
        _require(vm.memory >= vm.page_size, "vm.memory", vm.memory, "at least one page, e.g. 2GiB")
        _require(vm.memory % vm.page_size == 0, "vm.memory", vm.memory, "a whole number of pages")
        _require(vm.vcpus >= 1, "vm.vcpus", vm.vcpus, "1 or more")
        _require(vm.disk_size >= 0 and vm.device_state >= 0, "vm.disk_size/device_state",
                 (vm.disk_size, vm.device_state), "sizes of 0 or more")
        _require(wl.dirty_rate >= 0, "workload.dirty_rate", wl.dirty_rate, "0 or more, e.g. 200MiB/s")
        _require(0 <= wl.wss <= vm.memory, "workload.wss", wl.wss, "between 0 (all memory) and the VM's memory")
        for name in ("hot_fraction", "hot_share", "zero_fraction", "delta_fraction"):
            value = getattr(wl, name)
            _require(0.0 <= value <= 1.0, f"workload.{name}", value, "a fraction between 0 and 1")
        _require(link.link_rate > 0, "link.link_rate", link.link_rate, "more than 0, e.g. 10Gbit/s")
        _require(self.max_bandwidth >= 0, "max_bandwidth", self.max_bandwidth, "0 (no cap) or more, e.g. 50MiB/s")
        _require(link.rtt >= 0 and link.stream_limit >= 0, "link.rtt/stream_limit",
                 (link.rtt, link.stream_limit), "0 or more")
        _require(st.disk_dirty_rate >= 0 and st.disk_bandwidth >= 0, "storage rates",
                 (st.disk_dirty_rate, st.disk_bandwidth), "0 or more")
        _require(0.0 <= st.stale_fraction <= 1.0, "storage.stale_fraction", st.stale_fraction,
                 "a fraction between 0 and 1")
        _require(self.max_time > 0, "max_time", self.max_time, "more than 0 seconds")
        return self

    @property
    def wss_pages(self) -> int:
        return (self.workload.wss or self.vm.memory) // self.vm.page_size

    # -- changing ----------------------------------------------------------
    def with_param(self, name: str, value: Any) -> "Plan":
        """A copy with one parameter set by its short name (see PARAMETERS) or option name.

        Setting a dirty rate on an idle workload makes it uniform (a dirty rate
        means writes); ``bandwidth`` is read as ``link-rate``, with a warning.
        """
        key = name.replace("_", "-")
        if key in DEPRECATED_PARAMETERS:
            deprecated(key, DEPRECATED_PARAMETERS[key])
            key = DEPRECATED_PARAMETERS[key]
        if key == "dirty-rate" and self.workload.kind == "idle":
            return replace(self, workload=replace(self.workload, kind="uniform")).with_param(key, value)
        if key in PARAMETERS:
            section, attr, parse = PARAMETERS[key]
            try:
                parsed = parse(value)
            except InvalidInput as exc:
                raise InvalidInput(f"{key}: {exc.message}", exc.hint) from exc
            if section is None:
                return replace(self, **{attr: parsed}).validated()
            part = replace(getattr(self, section), **{attr: parsed})
            return replace(self, **{section: part}).validated()
        options = dict(self.options)
        options[name.replace("-", "_")] = value
        return replace(self, options=options)

    # -- showing -----------------------------------------------------------
    def describe(self) -> str:
        vm, wl, link, st = self.vm, self.workload, self.link, self.storage
        lines = [
            f"plan: {self.strategy} migration of {vm.name}, seed {self.seed}",
            f"  vm        {format_size(vm.memory)} RAM in {format_size(vm.page_size)} pages "
            f"({vm.pages} pages), {vm.vcpus} vCPUs, disk {format_size(vm.disk_size)}",
            f"  workload  {wl.kind}" + (f", {format_rate(wl.dirty_rate)} of writes over "
                                        f"{format_size(wl.wss or vm.memory)}" if wl.kind != "idle" else ""),
            f"  link      {format_rate(link.link_rate)}, RTT {link.rtt * 1000:g} ms"
            + (f", {format_rate(link.stream_limit)} per stream" if link.stream_limit else "")
            + (f"; migration capped at {format_rate(self.max_bandwidth)}" if self.max_bandwidth else ""),
            "  storage   " + ("shared" if st.shared else
                              f"local (disk moves; guest writes {format_rate(st.disk_dirty_rate)})"),
        ]
        if self.options:
            opts = ", ".join(f"{k}={v}" for k, v in sorted(self.options.items()))
            lines.append(f"  options   {opts}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.describe()


def _require(ok: bool, name: str, value: Any, what: str) -> None:
    if not ok:
        raise InvalidInput(f"plan field {name} = {value!r} is not valid", f"it must be {what}")


def _section(klass: type, name: str, data: Any) -> Any:
    if isinstance(data, klass):
        return data
    if not isinstance(data, dict):
        raise InvalidInput(f"plan section {name!r} must be a mapping", f"e.g. {{\"{name}\": {{...}}}}")
    kwargs = {}
    if klass is Link and "bandwidth" in data:
        deprecated("link.bandwidth", "link.link_rate")
        data = dict(data)
        old = data.pop("bandwidth")
        data.setdefault("link_rate", old)
    known = {f.name: f for f in fields(klass)}
    unknown = set(data) - set(known)
    if unknown:
        raise InvalidInput(f"unknown keys in plan section {name!r}: {', '.join(sorted(unknown))}",
                           f"known keys: {', '.join(known)}")
    for key, value in data.items():
        parse = _FIELD_PARSERS.get((name, key))
        try:
            kwargs[key] = parse(value) if parse else value
        except InvalidInput as exc:
            raise InvalidInput(f"plan field {name}.{key}: {exc.message}", exc.hint) from exc
    return klass(**kwargs)


def _fraction(text: Any) -> float:
    try:
        return float(text)
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"cannot read fraction {text!r}", "write a number between 0 and 1, e.g. 0.2") from exc


def _integer(text: Any) -> int:
    try:
        return int(parse_size(text))
    except InvalidInput:
        raise
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"cannot read whole number {text!r}", "write e.g. 4") from exc


def _boolean(text: Any) -> bool:
    if isinstance(text, bool):
        return text
    lowered = str(text).strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise InvalidInput(f"cannot read yes/no value {text!r}", "write true or false")


def _shared(text: Any) -> bool:
    if str(text).lower() in ("shared", "local"):
        return str(text).lower() == "shared"
    return _boolean(text)


# short name -> (plan section or None for the plan itself, attribute, parser)
PARAMETERS: dict[str, tuple[str | None, str, Callable[[Any], Any]]] = {
    "memory": ("vm", "memory", parse_size),
    "page-size": ("vm", "page_size", parse_size),
    "vcpus": ("vm", "vcpus", _integer),
    "disk-size": ("vm", "disk_size", parse_size),
    "device-state": ("vm", "device_state", parse_size),
    "workload": ("workload", "kind", str),
    "dirty-rate": ("workload", "dirty_rate", parse_rate),
    "wss": ("workload", "wss", parse_size),
    "hot-fraction": ("workload", "hot_fraction", _fraction),
    "hot-share": ("workload", "hot_share", _fraction),
    "zero-fraction": ("workload", "zero_fraction", _fraction),
    "delta-fraction": ("workload", "delta_fraction", _fraction),
    "trace": ("workload", "trace", str),
    "link-rate": ("link", "link_rate", parse_rate),
    "rtt": ("link", "rtt", parse_duration),
    "stream-limit": ("link", "stream_limit", parse_rate),
    "storage": ("storage", "shared", _shared),
    "disk-dirty-rate": ("storage", "disk_dirty_rate", parse_rate),
    "disk-bandwidth": ("storage", "disk_bandwidth", parse_rate),
    "stale-fraction": ("storage", "stale_fraction", _fraction),
    "strategy": (None, "strategy", str),
    "seed": (None, "seed", _integer),
    "max-time": (None, "max_time", parse_duration),
    "max-bandwidth": (None, "max_bandwidth", parse_rate),
}

# old short name -> the one it stands for (read with a warning)
DEPRECATED_PARAMETERS = {"bandwidth": "link-rate"}

_TOP_LEVEL = {attr: entry for entry in PARAMETERS.values() if entry[0] is None for attr in [entry[1]]}

_FIELD_PARSERS = {(section, attr): parse for section, attr, parse in PARAMETERS.values() if section}
