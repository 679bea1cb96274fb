"""What every strategy shares: the base class and the option helpers.

    Strategy          a named migration policy with an ``Options`` dataclass;
                      ``simulate(plan)`` runs it in the simulator, ``to_libvirt(spec)``
                      says what it is on libvirt (the LiveOptions fields it sets:
                      post-copy mode, auto-converge, compression …), ``to_cold(spec)``
                      what a real cold run takes from it (None: nothing)
    option()          a dataclass field with a unit ("size", "rate", "duration",
                      "bool", "int", "float", "choice") and a help line
    build_options()   an options object from a plain mapping, units parsed

Option names follow QEMU's migration parameters and Nova's settings where one
exists (downtime_limit, cpu_throttle_initial, xbzrle_cache_size,
multifd_channels, live_migration_completion_timeout …), so the libvirt backend
can map the same objects onto libvirt flags and parameters.
"""
from __future__ import annotations

from dataclasses import MISSING, dataclass, field, fields
from typing import Any, ClassVar

from ..errors import InvalidInput
from ..model import MigrationResult
from ..sim.plan import Plan
from ..units import parse_duration, parse_rate, parse_size


def option(default: Any, unit: str = "float", help: str = "", choices: tuple[str, ...] = ()) -> Any:
    """A field of an options dataclass, described for the CLI and widgets."""
    return field(default=default, metadata={"unit": unit, "help": help, "choices": choices})


def parse_option(unit: str, name: str, value: Any, choices: tuple[str, ...] = ()) -> Any:
    if value is None:
        return None
    try:
        if unit == "size":
            return parse_size(value)
        if unit == "rate":
            return parse_rate(value)
        if unit == "duration":
            return parse_duration(value)
        if unit == "int":
            return int(value)
        if unit == "float":
            return float(value)
        if unit == "bool":
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in ("1", "true", "yes", "on"):
                return True
            if text in ("0", "false", "no", "off"):
                return False
            raise ValueError(value)
        if unit == "choice":
            if value not in choices:
                raise InvalidInput(f"option {name} = {value!r} is not one of {', '.join(choices)}",
                                   f"choose one of: {', '.join(choices)}")
            return value
    except InvalidInput as exc:
        if exc.message.startswith("option "):
            raise
        raise InvalidInput(f"option {name}: {exc.message}", exc.hint) from exc
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"cannot read option {name} = {value!r}", f"it must be a {unit}") from exc
    return value


def build_options(cls: type, mapping: dict[str, Any] | None) -> Any:
    """``cls(**mapping)`` with units parsed; an unknown name is an error."""
    mapping = {k.replace("-", "_"): v for k, v in (mapping or {}).items()}
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(mapping) - set(known))
    if unknown:
        raise InvalidInput(f"unknown option(s) {', '.join(unknown)} for this strategy",
                           f"its options are: {', '.join(known) or '(none)'}")
    kwargs = {}
    for name, value in mapping.items():
        meta = known[name].metadata
        kwargs[name] = parse_option(meta.get("unit", "float"), name, value, meta.get("choices", ()))
    return cls(**kwargs)


def option_fields(cls: type) -> list[tuple[str, Any, dict[str, Any]]]:
    """(name, default, metadata) of every option of ``cls``."""
    out = []
    for f in fields(cls):
        default = f.default if f.default is not MISSING else None
        out.append((f.name, default, dict(f.metadata)))
    return out


@dataclass
class NoOptions:
    pass


class Strategy:
    """A migration policy. Subclasses set name, kind, description and Options."""

    name: ClassVar[str] = "base"
    kind: ClassVar[str] = "live"
    description: ClassVar[str] = ""
    Options: ClassVar[type] = NoOptions

    def __init__(self, options: Any = None) -> None:
        if options is None or isinstance(options, dict):
            options = build_options(self.Options, options)
        self.options = options
        self.check()

    def check(self) -> None:
        """Raise InvalidInput when the options contradict each other."""

    def simulate(self, plan: Plan, track_versions: bool = False) -> MigrationResult:
        raise NotImplementedError

    def to_libvirt(self, spec: Any = None) -> dict[str, Any]:
        """The LiveOptions fields (labmig.live.plan) that make this strategy on libvirt.

        ``spec`` is the MigrationSpec being run, for a strategy whose mapping depends on
        it. A live strategy with no libvirt counterpart, or a cold one, says so.
        """
        raise InvalidInput(f"strategy {self.name!r} has no live migration on libvirt",
                           "pick a live strategy; cold runs with labmig migrate cold")

    def to_cold(self, spec: Any = None) -> dict[str, Any] | None:
        """The cold run's options (labmig.cold.migration.ColdRunOptions) it sets; None: not a cold strategy."""
        return None
