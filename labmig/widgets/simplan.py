"""The panel's parameters turned into the simulator's plan, and the strategy registry read for the form.

    OptionSpec           one strategy option as the form shows it (name, default, help)
    strategy_choices     strategy names for a kind, from labmig.strategies.STRATEGIES
    option_specs         the options a strategy declares
    simulate(params)     run the simulator on the plan these parameters describe
"""
from __future__ import annotations

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
    help: str = ""


def _registry() -> dict[str, Any]:
    try:
        return importlib.import_module("labmig.strategies").STRATEGIES
    except (ImportError, AttributeError):
        return {}


def strategy_choices(kind: str) -> list[str]:
    """Strategy names that migrate this kind ("live" or "cold"), in registry order."""
    names = []
    for name, strategy in _registry().items():
        strategy_kind = getattr(strategy, "kind", "cold" if name == "cold" else "live")
        if strategy_kind == kind:
            names.append(name)
    return names


def option_specs(strategy: str) -> list[OptionSpec]:
    return []


def simulate(params: Any) -> MigrationResult:
    raise LabmigError("the simulator is not installed", "install labmig with its simulator")
