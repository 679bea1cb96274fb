"""One migration, described once: the input every backend (simulator, live, cold) takes.

    MigrationSpec       frozen; ``labmig.backends`` runs one, whatever the backend
    ├── vm              VM: name, memory, page size, vCPUs, disk size, device state
    ├── workload        Workload: kind, working set (wss), dirty rate, zero fraction, trace
    ├── link            Link: ``link_rate`` (capacity of the path between the hosts), rtt
    ├── link_given      the link rate was stated (a flag, a plan file's link section), not a
    │                   default: on the local lab a real run shapes the link to it
    ├── storage         Storage: shared, or local (the disks move too)
    ├── kind            "live" or "cold": the strategy's kind
    ├── strategy        a name in ``labmig.strategies.STRATEGIES``
    ├── options         that strategy's Options object, units parsed (strategies.base.option)
    ├── max_bandwidth   QEMU's cap on the migration stream (``max-bandwidth``,
    │                   libvirt's VIR_MIGRATE_PARAM_BANDWIDTH); 0 = no cap
    ├── policy          PolicySettings: who steers a real live run (a name in
    │                   labmig.live.policies.POLICIES, "nova" by default), its completion
    │                   timeout and timeout action (Nova's names; Nova's own timers are
    │                   labmig.nova.NovaSettings)
    ├── source, destination   for real runs: host names or libvirt URIs
    └── run_options     knobs only a real run has, by their LiveOptions / cold ColdRunOptions
                        names (block_migration, persistent, shutdown_timeout, verify …)
    spec_from_plan()    the spec of a simulator Plan (``MigrationSpec.from_plan``)

The views of a spec: the backends (``labmig.backends``) build each one from a spec,
and only from a spec, and run it; the migration itself is described here, once:

    Plan        labmig.sim.plan      the simulator's: ``spec.to_plan()`` (and back:
                                     ``MigrationSpec.from_plan``)
    LivePlan    labmig.live.plan     a real live run's: ``LivePlan.from_spec(spec)``, its
                                     LiveOptions from the strategy, cap, policy, run options
                                     (and back: ``plan.to_spec(strategy)``; from
                                     ``migrate live``'s flags: ``labmig.backends.live_spec``)
    ColdPlan    labmig.cold.migration  a real cold run's: ``ColdPlan.from_spec(spec)``, its
                                     ColdRunOptions from the run options

(The local lab's ``labmig.lab.layout.LabLayout`` is not a migration plan: it is where
the lab's hosts, paths and addresses are.)

Units are parsed once, here at the boundary: ``MigrationSpec.from_dict`` reads the
strings users type ("8GiB", "10Gbit/s", "300ms") and the CLI builds a spec through
it; inside, sizes are bytes, rates bytes per second, times seconds. Plan files
keep their shape: a plan's keys plus ``kind``, ``max_bandwidth``, ``policy``,
``source``, ``destination`` and ``run_options``. The old key ``link.bandwidth`` is
read as ``link.link_rate`` with a warning, and a dirty rate given without a workload
kind means uniform writes over the working set.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, Mapping

from .errors import InvalidInput
from .sim.plan import VM, Link, Plan, Storage, Workload
from .strategies import STRATEGIES, build_options
from .units import parse_duration, parse_rate

__all__ = ["MigrationSpec", "PolicySettings", "Link", "VM", "Workload", "Storage", "KINDS"]

KINDS = ("live", "cold")
TIMEOUT_ACTIONS = ("abort", "force-complete")


@dataclass(frozen=True)
class PolicySettings:
    """Who steers a real live run: ``name`` in labmig.live.policies.POLICIES.

    ``completion_timeout`` None leaves it to the policy (Nova: 800 s per GiB of data);
    ``timeout_action`` is Nova's ``live_migration_timeout_action`` ("abort" or
    "force-complete"); None leaves it to the policy too.
    """

    name: str = "nova"
    completion_timeout: float | None = None
    timeout_action: str | None = None

    def __post_init__(self) -> None:
        if self.completion_timeout is not None:
            seconds = parse_duration(self.completion_timeout)
            if seconds <= 0:
                raise InvalidInput("completion timeout must be positive", "give a duration like 60s")
            object.__setattr__(self, "completion_timeout", seconds)
        if self.timeout_action is not None:
            action = str(self.timeout_action).replace("_", "-")
            if action not in TIMEOUT_ACTIONS:
                raise InvalidInput(f"unknown timeout action {self.timeout_action!r}",
                                   "use abort or force-complete")
            object.__setattr__(self, "timeout_action", action)


@dataclass(frozen=True)
class MigrationSpec:
    """One migration: what moves, over what, how; real runs add the VM's hosts."""

    vm: VM = field(default_factory=VM)
    workload: Workload = field(default_factory=Workload)
    link: Link = field(default_factory=Link)
    storage: Storage = field(default_factory=Storage)
    link_given: bool = False
    strategy: str = "precopy"
    options: Any = None                  # the strategy's Options object; None = its defaults
    kind: str = ""                       # "" = the strategy's kind
    max_bandwidth: float = 0.0           # bytes/s; 0 = no cap
    policy: PolicySettings = field(default_factory=PolicySettings)
    source: str = ""
    destination: str = ""
    run_options: Mapping[str, Any] = field(default_factory=dict)
    seed: int = 0
    max_time: float = 3600.0

    def __post_init__(self) -> None:
        cls = STRATEGIES.get(self.strategy)
        if cls is None:
            raise InvalidInput(f"unknown strategy {self.strategy!r}", f"choose one of: {', '.join(STRATEGIES)}")
        if self.options is None or isinstance(self.options, dict):
            object.__setattr__(self, "options", build_options(cls.Options, self.options))
        elif not isinstance(self.options, cls.Options):
            raise InvalidInput(f"options of type {type(self.options).__name__} given to strategy {self.strategy!r}",
                               f"give a {cls.Options.__name__} or a mapping of its option names")
        kind = self.kind or cls.kind
        if kind not in KINDS:
            raise InvalidInput(f"unknown migration kind {kind!r}", "use live or cold")
        if kind != cls.kind:
            raise InvalidInput(f"strategy {self.strategy!r} is a {cls.kind} strategy, not {kind}",
                               "pick a strategy of that kind (cold is the one cold strategy)")
        object.__setattr__(self, "kind", kind)
        cap = 0.0 if self.max_bandwidth is None else parse_rate(self.max_bandwidth)
        if cap < 0:
            raise InvalidInput(f"max_bandwidth {self.max_bandwidth!r} is negative",
                               "give a rate like 50MiB/s, or 0 for no cap")
        object.__setattr__(self, "max_bandwidth", cap)
        object.__setattr__(self, "run_options", dict(self.run_options))
        self.to_plan().validated()

    # -- views -------------------------------------------------------------------
    @property
    def name(self) -> str:
        """The VM's name (its libvirt name in a real run)."""
        return self.vm.name

    def options_dict(self, changed_only: bool = True) -> dict[str, Any]:
        """The strategy's options by name (only those that differ from the defaults)."""
        values = asdict(self.options)
        if not changed_only:
            return values
        defaults = asdict(type(self.options)())
        return {k: v for k, v in values.items() if v != defaults.get(k)}

    def to_plan(self) -> Plan:
        """The simulator's view: the same VM, workload, link, storage, strategy and cap."""
        return Plan(vm=self.vm, workload=self.workload, link=self.link, storage=self.storage,
                    strategy=self.strategy, options=self.options_dict(), seed=self.seed,
                    max_time=self.max_time, max_bandwidth=self.max_bandwidth)

    @classmethod
    def from_plan(cls, plan: Plan, **real: Any) -> "MigrationSpec":
        """The spec of ``plan``; ``real`` sets the fields a plan lacks (source, policy …)."""
        return cls(vm=plan.vm, workload=plan.workload, link=plan.link, storage=plan.storage,
                   strategy=plan.strategy, options=dict(plan.options), seed=plan.seed,
                   max_time=plan.max_time, max_bandwidth=plan.max_bandwidth, **real)

    def with_param(self, name: str, value: Any) -> "MigrationSpec":
        """A copy with one parameter set by its CLI name (see labmig.sim.plan.PARAMETERS) or option name."""
        key = name.replace("_", "-")
        if key in ("source", "destination", "kind"):
            return replace(self, **{key: value})
        if key in ("link-rate", "bandwidth"):
            return replace(self.with_param_plan(name, value), link_given=True)
        return self.with_param_plan(name, value)

    def with_param_plan(self, name: str, value: Any) -> "MigrationSpec":
        """:meth:`with_param` for the fields the simulator's plan has."""
        plan = self.to_plan().with_param(name, value)
        if plan.strategy != self.strategy:   # the old options may not apply to the new strategy
            return replace(self, strategy=plan.strategy, options=None, kind="")
        return replace(self, vm=plan.vm, workload=plan.workload, link=plan.link, storage=plan.storage,
                       options=dict(plan.options), seed=plan.seed, max_time=plan.max_time,
                       max_bandwidth=plan.max_bandwidth)

    def require_hosts(self) -> None:
        """Raise InvalidInput unless a real run can start: a VM name, a destination."""
        if not self.vm.name or not self.vm.name.strip():
            raise InvalidInput("no VM named", "give the VM's libvirt name; `labmig status` lists them")
        if not self.destination:
            raise InvalidInput("no destination host", "add --to HOST (a lab host name or a libvirt URI)")

    # -- (de)serialising ----------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        data = self.to_plan().to_dict()
        data.update(kind=self.kind, options=self.options_dict(), policy=asdict(self.policy), link_given=self.link_given,
                    source=self.source, destination=self.destination, run_options=dict(self.run_options))
        return data

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "MigrationSpec":
        """A spec from plain data (a plan file): units parsed, every field checked."""
        if not isinstance(data, Mapping):
            raise InvalidInput(f"a migration spec must be a mapping, not {type(data).__name__}",
                               "give a JSON object with vm, workload, link, storage, strategy")
        own = {f.name for f in fields(cls)} - {f.name for f in fields(Plan)}
        plan = Plan.from_dict({k: v for k, v in data.items() if k not in own})
        real: dict[str, Any] = {k: data[k] for k in own if k in data}
        link = data.get("link")
        if isinstance(link, Mapping) and ("link_rate" in link or "bandwidth" in link):
            real.setdefault("link_given", True)
        if "policy" in real:
            policy = real["policy"]
            if not isinstance(policy, Mapping):
                raise InvalidInput("spec section 'policy' must be a mapping",
                                   'e.g. {"name": "nova", "completion_timeout": "60s"}')
            known = {f.name for f in fields(PolicySettings)}
            if set(policy) - known:
                raise InvalidInput(f"unknown keys in spec section 'policy': {', '.join(sorted(set(policy) - known))}",
                                   f"known keys: {', '.join(sorted(known))}")
            real["policy"] = PolicySettings(**policy)
        return cls.from_plan(plan, **real)

    @classmethod
    def from_json(cls, text: str) -> "MigrationSpec":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InvalidInput(f"spec is not valid JSON: {exc}", "check the file with a JSON linter") from exc
        return cls.from_dict(data)

    def describe(self) -> str:
        lines = self.to_plan().describe().splitlines()
        lines[0] = f"spec: {self.kind} migration of {self.vm.name} ({self.strategy}), seed {self.seed}"
        if self.destination:
            lines.append(f"  hosts     {self.source or '(where it runs)'} -> {self.destination}")
        return "\n".join(lines)


def spec_from_plan(plan: Plan, **real: Any) -> MigrationSpec:
    """Shorthand for :meth:`MigrationSpec.from_plan`."""
    return MigrationSpec.from_plan(plan, **real)
