"""What a real live migration should do, as plain data (nothing here talks to libvirt).

    LiveOptions   the knobs a lab turns: max bandwidth, max downtime, post-copy mode,
                  auto-converge, compression, parallel channels, block migration,
                  persistence, policy name and timeouts
    PostcopyMode  when to switch to post-copy: never, now, after N passes, on timeout
    LivePlan      VM + source + destination + options; turns itself into the
                  libvirt flags and typed parameters of ``migrateToURI3``. A view of a
                  live MigrationSpec (labmig.spec): ``LivePlan.from_spec(spec)``, and
                  back: ``plan.to_spec(strategy)`` (LiveOptions.to_spec)
    SPEC_HOMES    the LiveOptions fields that have their own place in a spec (not run options)

The names follow QEMU and virsh (``max-bandwidth``, ``--postcopy``,
``--auto-converge``, ``--parallel-connections``, ``--copy-storage-all``) so a
student can map each option to what the hypervisor does with it.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import InvalidInput
from ..nova import NovaSettings
from ..units import parse_duration, parse_rate

if TYPE_CHECKING:
    from ..spec import MigrationSpec

# Compression methods libvirt accepts; the multifd ones need parallel channels.
COMPRESSION_METHODS = ("xbzrle", "mt", "zlib", "zstd")
MULTIFD_COMPRESSION = ("zlib", "zstd")

# LiveOptions fields a spec holds in its own place, not in its run options: field -> that place.
SPEC_HOMES = {"max_bandwidth": "max_bandwidth", "policy": "policy.name",
              "completion_timeout": "policy.completion_timeout", "timeout_action": "policy.timeout_action"}


@dataclass(frozen=True)
class PostcopyMode:
    """When to switch a running pre-copy to post-copy.

    ``kind`` is "off", "now" (right after the first pass starts), "after"
    (after ``passes`` completed pre-copy passes) or "on-timeout" (when the
    policy's completion timeout fires, Nova's ``force_complete`` action).
    """

    kind: str = "off"
    passes: int = 0

    @classmethod
    def parse(cls, text: "str | PostcopyMode | None") -> "PostcopyMode":
        if isinstance(text, PostcopyMode):
            return text
        raw = (text or "off").strip().lower()
        if raw in ("off", "no", "none", "false"):
            return cls("off")
        if raw in ("now", "immediately", "on"):
            return cls("now")
        if raw in ("on-timeout", "timeout"):
            return cls("on-timeout")
        if raw.startswith("after:") or raw.startswith("after="):
            try:
                passes = int(raw[6:])
            except ValueError:
                passes = -1
            if passes >= 1:
                return cls("after", passes)
        raise InvalidInput(f"unknown post-copy mode {text!r}",
                           "use off, now, after:N (N >= 1 passes) or on-timeout")

    @property
    def enabled(self) -> bool:
        return self.kind != "off"

    def __str__(self) -> str:
        return f"after:{self.passes}" if self.kind == "after" else self.kind


@dataclass
class LiveOptions:
    """Options of one live migration. Sizes in bytes, rates in bytes/s, times in seconds."""

    max_bandwidth: float | None = None      # QEMU's cap on the migration stream; None = unlimited
    max_downtime: float | None = None       # QEMU's downtime-limit; None = the policy decides
    postcopy: PostcopyMode = field(default_factory=PostcopyMode)
    auto_converge: bool = False
    auto_converge_initial: int | None = None    # QEMU cpu-throttle-initial, percent (its default 20)
    auto_converge_increment: int | None = None  # QEMU cpu-throttle-increment, percent (its default 10)
    compression: str | None = None          # one of COMPRESSION_METHODS
    parallel_connections: int = 0           # multifd channels; 0 = one classic stream
    block_migration: bool | None = None     # None = decide from the shared-storage probe
    persistent: bool = True                 # define the VM on the destination (Nova: yes)
    undefine_source: bool = True            # remove the definition from the source (Nova: yes)
    policy: str = "nova"                    # a name in labmig.live.policies.POLICIES
    nova: NovaSettings | None = None        # the nova policy's ramp and timeout; None = Nova's defaults
    completion_timeout: float | None = None  # seconds; None = the policy's own (Nova: 800 s per GiB)
    timeout_action: str | None = None       # "abort" or "force-complete", as Nova; None = force-complete
                                            # with postcopy "on-timeout", else abort
    call_timeout: float = 30.0              # watchdog on each libvirt call
    poll_interval: float = 0.1              # seconds between job-stat samples

    def __post_init__(self) -> None:
        self.postcopy = PostcopyMode.parse(self.postcopy)
        if self.max_bandwidth is not None:
            self.max_bandwidth = parse_rate(self.max_bandwidth)
            if self.max_bandwidth <= 0:
                raise InvalidInput(f"max bandwidth must be positive, got {self.max_bandwidth!r}",
                                   "give a rate like 100MiB/s, or leave it out for no cap")
        if self.max_downtime is not None:
            self.max_downtime = parse_duration(self.max_downtime)
            if self.max_downtime <= 0:
                raise InvalidInput("max downtime must be positive", "give a duration like 300ms")
        if self.completion_timeout is not None:
            self.completion_timeout = parse_duration(self.completion_timeout)
            if self.completion_timeout <= 0:
                raise InvalidInput("completion timeout must be positive", "give a duration like 60s")
        if self.compression is not None:
            self.compression = self.compression.lower()
            if self.compression in ("", "none", "off"):
                self.compression = None
            elif self.compression not in COMPRESSION_METHODS:
                raise InvalidInput(f"unknown compression {self.compression!r}",
                                   f"use one of {', '.join(COMPRESSION_METHODS)}")
        for name in ("auto_converge_initial", "auto_converge_increment"):
            value = getattr(self, name)
            if value is not None and not 1 <= int(value) <= 99:
                raise InvalidInput(f"{name.replace('_', ' ')} must be a percentage from 1 to 99, got {value!r}",
                                   "QEMU throttles the guest CPU by 1..99 %")
        if self.parallel_connections < 0:
            raise InvalidInput("parallel connections cannot be negative", "use 0 (off) or 2..8")
        if self.compression in MULTIFD_COMPRESSION and self.parallel_connections < 1:
            raise InvalidInput(f"{self.compression} compression runs on multifd channels",
                               "add --parallel-connections 2 (or use xbzrle)")
        if self.compression in ("xbzrle", "mt") and self.parallel_connections:
            raise InvalidInput(f"{self.compression} compression does not run on multifd channels (QEMU refuses it)",
                               "drop --parallel-connections, or use zlib/zstd with it")
        if self.timeout_action not in (None, "abort", "force-complete"):
            raise InvalidInput(f"unknown timeout action {self.timeout_action!r}",
                               "use abort or force-complete")
        if self.call_timeout <= 0 or self.poll_interval <= 0:
            raise InvalidInput("call timeout and poll interval must be positive", "e.g. 30s and 250ms")

    @property
    def strategy(self) -> str:
        """The strategy name (as the simulator's registry spells it) these options amount to."""
        if self.postcopy.kind == "now":
            return "postcopy"
        if self.postcopy.enabled:
            return "hybrid"
        if self.auto_converge:
            return "autoconverge"
        if self.compression or self.parallel_connections:
            return "compression"
        return "precopy"

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["postcopy"] = str(self.postcopy)
        return data

    def to_spec(self, vm: str, source: str, destination: str, strategy: str | None = None,
                changed_only: bool = False) -> "MigrationSpec":
        """The live spec these options are the run of: the cap and the policy in their places.

        ``strategy`` (else the one the options amount to) is the spec's, with its default
        options; every other option is a run option (over the strategy's mapping), or with
        ``changed_only`` only those that differ from LiveOptions' defaults (the flags a user
        gave on top of a strategy). Nova's timers (``nova``) are not carried: a spec holds
        them in the hybrid strategy's options.
        """
        from ..spec import VM, MigrationSpec, PolicySettings

        defaults = LiveOptions()
        run: dict[str, Any] = {}
        for f in dataclasses.fields(LiveOptions):
            value = getattr(self, f.name)
            given = not changed_only or value != getattr(defaults, f.name)
            if f.name not in SPEC_HOMES and f.name != "nova" and given:
                run[f.name] = str(value) if f.name == "postcopy" else value
        return MigrationSpec(vm=VM(name=vm), strategy=strategy or self.strategy,
                             max_bandwidth=self.max_bandwidth or 0.0, source=source, destination=destination,
                             policy=PolicySettings(self.policy, self.completion_timeout, self.timeout_action),
                             run_options=run)

    @classmethod
    def from_strategy(cls, name: str, options: dict[str, Any] | None = None, **overrides: Any) -> "LiveOptions":
        """The real-migration options for a simulator strategy (labmig.strategies) and its options.

        So one strategy, with the same option names, runs in the simulator and on libvirt:
        each strategy says what it is on libvirt (``Strategy.to_libvirt``). Options with no
        libvirt counterpart (stop rules, simulation steps) are ignored.
        """
        from ..strategies import make_strategy

        options = {k.replace("-", "_"): v for k, v in (options or {}).items()}
        max_bandwidth = options.pop("max_bandwidth", None)   # the spec's, not a strategy option
        kwargs: dict[str, Any] = make_strategy(name, options).to_libvirt()   # each strategy maps itself
        if max_bandwidth:
            kwargs["max_bandwidth"] = max_bandwidth
        kwargs.update(overrides)
        return cls(**kwargs)


@dataclass
class LivePlan:
    """One live migration: the VM by name, the two hosts by name or URI, and options."""

    vm: str
    source: str
    destination: str
    options: LiveOptions = field(default_factory=LiveOptions)

    def __post_init__(self) -> None:
        if not self.vm or not str(self.vm).strip():
            raise InvalidInput("no VM named", "give the VM's libvirt name, e.g. `labmig status` lists them")
        if not self.destination:
            raise InvalidInput("no destination host", "add --to HOST (a lab host name or a libvirt URI)")

    @classmethod
    def from_spec(cls, spec: "MigrationSpec") -> "LivePlan":
        """The plan of a live spec: its strategy's options on libvirt, its cap, its policy, its run options.

        The only way the live backend turns a spec into a plan (labmig.backends); run
        options are LiveOptions fields, but not those in SPEC_HOMES (the spec's own places).
        """
        from ..spec import PolicySettings

        spec.require_hosts()
        known = {f.name for f in dataclasses.fields(LiveOptions)}
        run = dict(spec.run_options)
        for key in run:
            if key in SPEC_HOMES:
                raise InvalidInput(f"run option {key!r} has its own place in the spec", f"set {SPEC_HOMES[key]}")
            if key not in known:
                raise InvalidInput(f"unknown live run option {key!r}",
                                   f"known: {', '.join(sorted(known - set(SPEC_HOMES)))}")
        if spec.policy.name != PolicySettings().name:
            run["policy"] = spec.policy.name
        for name in ("completion_timeout", "timeout_action"):
            if getattr(spec.policy, name) is not None:
                run[name] = getattr(spec.policy, name)
        if spec.max_bandwidth:
            run["max_bandwidth"] = spec.max_bandwidth
        options = LiveOptions.from_strategy(spec.strategy, spec.options_dict(), **run)
        return cls(spec.vm.name, spec.source, spec.destination, options)

    def to_spec(self, strategy: str | None = None) -> "MigrationSpec":
        """The spec back: ``LivePlan.from_spec(plan.to_spec(spec.strategy)) == plan`` (see LiveOptions.to_spec)."""
        return self.options.to_spec(self.vm, self.source, self.destination, strategy)

    def to_dict(self) -> dict[str, Any]:
        return {"vm": self.vm, "source": self.source, "destination": self.destination,
                "options": self.options.to_dict()}

    # -- libvirt -----------------------------------------------------------------

    def flags(self, libvirt: Any, block_migration: bool) -> int:
        """The ``virDomainMigrateFlags`` of this plan (Nova's choice: live, peer-to-peer)."""
        opts = self.options
        flags = libvirt.VIR_MIGRATE_LIVE | libvirt.VIR_MIGRATE_PEER2PEER
        if opts.persistent:
            flags |= libvirt.VIR_MIGRATE_PERSIST_DEST
        if opts.undefine_source:
            flags |= libvirt.VIR_MIGRATE_UNDEFINE_SOURCE
        if block_migration:
            flags |= libvirt.VIR_MIGRATE_NON_SHARED_DISK
        if opts.auto_converge:
            flags |= libvirt.VIR_MIGRATE_AUTO_CONVERGE
        if opts.postcopy.enabled:
            flags |= libvirt.VIR_MIGRATE_POSTCOPY
        if opts.compression:
            flags |= libvirt.VIR_MIGRATE_COMPRESSED
        if opts.parallel_connections:
            flags |= libvirt.VIR_MIGRATE_PARALLEL
        return flags

    def params(self, libvirt: Any, migrate_uri: str | None = None,
               disks: list[str] | None = None) -> dict[str, Any]:
        """Typed parameters for ``migrateToURI3``: bandwidth (MiB/s), compression, channels …"""
        opts = self.options
        params: dict[str, Any] = {}
        if migrate_uri:
            params[libvirt.VIR_MIGRATE_PARAM_URI] = migrate_uri
        if opts.max_bandwidth:
            params[libvirt.VIR_MIGRATE_PARAM_BANDWIDTH] = bandwidth_mib(opts.max_bandwidth)
        if opts.auto_converge and opts.auto_converge_initial is not None:
            params[libvirt.VIR_MIGRATE_PARAM_AUTO_CONVERGE_INITIAL] = int(opts.auto_converge_initial)
        if opts.auto_converge and opts.auto_converge_increment is not None:
            params[libvirt.VIR_MIGRATE_PARAM_AUTO_CONVERGE_INCREMENT] = int(opts.auto_converge_increment)
        if opts.compression:
            params[libvirt.VIR_MIGRATE_PARAM_COMPRESSION] = opts.compression
        if opts.parallel_connections:
            params[libvirt.VIR_MIGRATE_PARAM_PARALLEL_CONNECTIONS] = int(opts.parallel_connections)
        if disks:
            params[libvirt.VIR_MIGRATE_PARAM_MIGRATE_DISKS] = list(disks)
        return params


def bandwidth_mib(rate: float) -> int:
    """libvirt takes migration bandwidth in whole MiB/s; round up so a cap is never 0."""
    return max(1, int(math.ceil(rate / 2**20)))
