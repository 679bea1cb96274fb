"""The strategy registry read for the form, and the panel's parameters run in the simulator.

    OptionSpec           one strategy option as the form shows it (name, default, help)
    strategy_choices     strategy names for a kind, from labmig.strategies.STRATEGIES
    option_specs         the options a strategy declares
    simulate(params)     run the simulator on the spec these parameters describe
"""
from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass
from typing import Any

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


def simulate(params: Any) -> MigrationResult:
    """Run the simulator on the spec these parameters describe (``params.to_spec()``)."""
    from ..backends import SimulatorBackend

    return SimulatorBackend().run(params.to_spec())
