"""Adding a strategy is one class and a registry line: a toy one shows up everywhere strategies are listed.

The toy is pre-copy that asks libvirt for auto-converge (VIR_MIGRATE_AUTO_CONVERGE) with a
fixed first throttle: it knows its own libvirt mapping (Strategy.to_libvirt), nothing else in
labmig names it. It is registered for one test at a time (monkeypatch on STRATEGIES).
"""
import json
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import pytest

from labmig.cli import build_parser, main
from labmig.strategies import STRATEGIES
from labmig.strategies.base import option
from labmig.strategies.precopy import Precopy, PrecopyOptions


@dataclass
class ToyOptions(PrecopyOptions):
    toy_throttle: int = option(42, "int", "toy: the first CPU throttle, %")


class Toy(Precopy):
    name = "toy"
    description = "a toy: pre-copy with auto-converge from a fixed throttle"
    Options = ToyOptions

    def to_libvirt(self, spec: Any = None) -> dict[str, Any]:
        return {**super().to_libvirt(spec), "auto_converge": True, "auto_converge_initial": self.options.toy_throttle}


@pytest.fixture
def toy(monkeypatch):
    monkeypatch.setitem(STRATEGIES, "toy", Toy)
    return Toy


def test_the_toy_is_a_choice_of_labmig_simulate_and_runs(toy, capsys):
    assert build_parser().parse_args(["simulate", "--strategy", "toy"]).strategy == "toy"
    assert main(["simulate", "--strategy", "toy", "--memory", "64MiB", "--toy-throttle", "30", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["strategy"] == "toy" and result["outcome"] == "completed"
    assert result["plan"]["options"] == {"toy_throttle": 30}     # parsed once, at the command line


def test_the_toy_is_a_choice_of_migrate_live_and_its_precheck_lists_its_libvirt_flags(toy, monkeypatch, capsys):
    """Only the hosts are stood in for: the pre-check report's libvirt line comes from the toy's to_libvirt."""
    import labmig.hosts as hosts
    import labmig.live.prechecks as prechecks

    host = lambda name: SimpleNamespace(name=name, uri=f"test:///{name}", close=lambda: None)  # noqa: E731
    monkeypatch.setattr(hosts, "resolve_host", host)
    monkeypatch.setattr(prechecks, "run_prechecks",
                        lambda plan, source, destination: prechecks.PrecheckReport(plan))
    assert main(["migrate", "live", "g", "--from", "lab1", "--to", "lab2", "--strategy", "toy",
                 "--check-only"]) == 0
    out = capsys.readouterr().out
    line = next(line for line in out.splitlines() if "libvirt" in line)
    assert "toy:" in line and "VIR_MIGRATE_AUTO_CONVERGE" in line and "VIR_MIGRATE_LIVE" in line
    assert "VIR_MIGRATE_PARAM_AUTO_CONVERGE_INITIAL=42" in line
    with pytest.raises(SystemExit):
        build_parser().parse_args(["migrate", "live", "g", "--to", "lab2", "--strategy", "cold"])


def test_the_toy_is_a_choice_of_the_panel(toy):
    from labmig.widgets.simplan import strategy_choices, strategy_description

    assert "toy" in strategy_choices("live") and "toy" not in strategy_choices("cold")
    assert strategy_description("toy") == Toy.description
