"""The panel's parameters turned into the simulator's plan, and the strategy registry read for the form.

    OptionSpec           one strategy option as the form shows it (name, default, help)
    strategy_choices     strategy names for a kind, from labmig.strategies.STRATEGIES
    option_specs         the options a strategy declares
    simulate(params)     run the simulator on the plan these parameters describe
"""
from __future__ import annotations

import dataclasses
import importlib
import logging
from dataclasses import dataclass
from typing import Any

from ..errors import LabmigError
from ..model import MigrationResult

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class OptionSpec:
    name: str
    default: Any
    unit: str = "float"
    help: str = ""
    choices: tuple[str, ...] = ()


# Shown as fields of their own on the panel, not among a strategy's options.
OWN_FIELDS = ("downtime_limit",)


def _registry() -> dict[str, Any]:
    try:
        return importlib.import_module("labmig.strategies").STRATEGIES
    except (ImportError, AttributeError):
        return {}


def strategy_choices(kind: str) -> list[str]:
    """Strategy names that migrate this kind ("live" or "cold"), in registry order."""
    return [name for name, cls in _registry().items() if getattr(cls, "kind", "live") == kind]


def strategy_description(name: str) -> str:
    return getattr(_registry().get(name), "description", "")


def option_specs(strategy: str) -> list[OptionSpec]:
    """The options a strategy declares (its Options dataclass), for the form."""
    cls = _registry().get(strategy)
    if cls is None:
        return []
    from ..strategies import option_fields

    return [OptionSpec(name, default, meta.get("unit", "float"), meta.get("help", ""),
                       tuple(meta.get("choices", ())))
            for name, default, meta in option_fields(cls.Options) if name not in OWN_FIELDS]


def _takes(strategy: str, option: str) -> bool:
    cls = _registry().get(strategy)
    from dataclasses import fields

    return cls is not None and option in {f.name for f in fields(cls.Options)}


def to_plan(params: Any):
    """The simulator's :class:`labmig.plan.Plan` for the panel's parameters."""
    from ..plan import Plan
    from ..units import parse_rate

    rate = parse_rate(params.dirty_rate)
    options = dict(params.options)
    if _takes(params.strategy, "downtime_limit"):
        options.setdefault("downtime_limit", params.downtime_limit)
    return Plan.from_dict({
        "vm": {"name": params.vm, "memory": params.memory, "disk_size": params.disk},
        "workload": {"kind": "uniform" if rate > 0 else "idle", "dirty_rate": params.dirty_rate,
                     "wss": params.working_set},
        "link": {"bandwidth": params.bandwidth},
        "storage": {"shared": params.shared_storage},
        "strategy": params.strategy,
        "options": options,
    })


def simulate(params: Any) -> MigrationResult:
    """Run the simulator on these parameters; the result names the panel's VM and hosts."""
    try:
        sim_run = importlib.import_module("labmig.sim.run")
    except ImportError as exc:
        raise LabmigError("the simulator (labmig.sim) is not installed",
                          "install labmig with its simulator") from exc
    result = sim_run.simulate(to_plan(params))
    return dataclasses.replace(result, vm=params.vm, source=params.source, destination=params.destination)
