"""MigrationSpec: one input for every backend, units parsed once, the simulator's plan a view of it."""
import pytest

from labmig.errors import InvalidInput
from labmig.sim.plan import Link, Plan
from labmig.spec import MigrationSpec, PolicySettings
from labmig.strategies import HybridOptions, PrecopyOptions

GiB, MiB = 1 << 30, 1 << 20


def test_from_dict_parses_units_once_and_round_trips():
    spec = MigrationSpec.from_dict({
        "vm": {"name": "guest1", "memory": "1GiB"}, "link": {"link_rate": "1Gbit/s", "rtt": "2ms"},
        "max_bandwidth": "50MiB/s", "strategy": "hybrid", "options": {"downtime_limit": "100ms"},
        "policy": {"completion_timeout": "1min", "timeout_action": "force_complete"},
        "source": "lab1", "destination": "lab2", "run_options": {"block_migration": True}})
    assert spec.vm.memory == GiB and spec.link.link_rate == 1e9 / 8 and spec.link.rtt == 0.002
    assert spec.max_bandwidth == 50 * MiB and spec.kind == "live" and spec.link_given
    assert isinstance(spec.options, HybridOptions) and spec.options.downtime_limit == 0.1
    assert spec.policy == PolicySettings("nova", 60.0, "force-complete")
    assert MigrationSpec.from_json(spec.to_json()) == spec


def test_the_plan_is_a_view_of_the_spec():
    spec = MigrationSpec.from_dict({"vm": {"memory": "2GiB"}, "max_bandwidth": "10MiB/s",
                                    "options": {"downtime_limit": "50ms"}})
    plan = spec.to_plan()
    assert isinstance(plan, Plan) and plan.vm.memory == 2 * GiB and plan.max_bandwidth == 10 * MiB
    assert plan.options == {"downtime_limit": 0.05}
    assert MigrationSpec.from_plan(plan) == spec


def test_kind_follows_the_strategy_and_must_agree_with_it():
    assert MigrationSpec(strategy="cold").kind == "cold"
    assert MigrationSpec().kind == "live" and isinstance(MigrationSpec().options, PrecopyOptions)
    with pytest.raises(InvalidInput, match="cold strategy, not live"):
        MigrationSpec(strategy="cold", kind="live")
    with pytest.raises(InvalidInput, match="unknown strategy"):
        MigrationSpec(strategy="teleport")


@pytest.mark.parametrize("data,needle", [
    ({"max_bandwidth": "-5MiB/s"}, "max_bandwidth"),
    ({"link": {"link_rate": "fast"}}, "link"),
    ({"options": {"colour": 1}}, "unknown option"),
    ({"policy": {"timeout_action": "explode"}}, "timeout action"),
    ({"policy": {"colour": 1}}, "unknown keys in spec section 'policy'"),
])
def test_bad_specs_name_what_is_wrong(data, needle):
    with pytest.raises(InvalidInput, match=needle) as info:
        MigrationSpec.from_dict(data)
    assert info.value.hint


def test_old_link_bandwidth_key_is_read_as_the_link_rate_with_a_warning():
    with pytest.warns(FutureWarning, match="link_rate"):
        spec = MigrationSpec.from_dict({"link": {"bandwidth": "10Gbit/s"}})
    assert spec.link.link_rate == 10e9 / 8 and spec.link_given
    with pytest.warns(FutureWarning):
        assert Link(bandwidth=5.0).link_rate == 5.0
    with pytest.warns(FutureWarning):
        assert Link(link_rate=7.0).bandwidth == 7.0


def test_a_dirty_rate_without_a_workload_means_uniform_writes():
    assert MigrationSpec.from_dict({"workload": {"dirty_rate": "200MiB/s"}}).workload.kind == "uniform"
    assert MigrationSpec().with_param("dirty-rate", "200MiB/s").workload.kind == "uniform"
    assert MigrationSpec().with_param("memory", "1GiB").workload.kind == "idle"


def test_with_param_reaches_every_part():
    spec = (MigrationSpec().with_param("link-rate", "1Gbit/s").with_param("max-bandwidth", "50MiB/s")
            .with_param("destination", "lab2").with_param("downtime-limit", "100ms"))
    assert spec.link.link_rate == 1e9 / 8 and spec.link_given and spec.max_bandwidth == 50 * MiB
    assert spec.destination == "lab2" and spec.options.downtime_limit == 0.1
    assert not MigrationSpec().with_param("memory", "1GiB").link_given
    cold = spec.with_param("strategy", "cold")
    assert cold.kind == "cold" and cold.max_bandwidth == 50 * MiB


def test_a_real_run_needs_a_vm_and_a_destination():
    with pytest.raises(InvalidInput, match="no destination"):
        MigrationSpec().require_hosts()
    MigrationSpec(destination="lab2").require_hosts()
