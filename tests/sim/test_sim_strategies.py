"""Strategies on the cases the literature compares them on, and their QEMU/Nova rules."""
from dataclasses import replace

import pytest

from labmig import nova
from labmig.errors import InvalidInput
from labmig.model import Outcome
from labmig.sim.plan import VM, Link, Plan, Storage, Workload
from labmig.sim.run import simulate
from labmig.strategies import STRATEGIES, make_strategy

GiB, MiB = 1 << 30, 1 << 20

# The guest dirties 2 GiB/s over a 4 GiB working set; the link moves 1.25 GB/s.
HOT = Plan(vm=VM(memory=8 * GiB), workload=Workload(kind="uniform", dirty_rate=2 * GiB, wss=4 * GiB),
           link=Link(link_rate=10e9 / 8))
# A case pre-copy handles.
MILD = replace(HOT, workload=Workload(kind="uniform", dirty_rate=200 * MiB, wss=1 * GiB))


def run(plan, strategy, **options):
    return simulate(replace(plan, strategy=strategy, options=options))


def test_registry_lists_the_six_strategies_with_options():
    assert list(STRATEGIES) == ["precopy", "postcopy", "hybrid", "autoconverge", "compression", "cold"]
    for cls in STRATEGIES.values():
        assert cls.description and cls.Options
    assert make_strategy("autoconverge").options.cpu_throttle_initial == 20


def test_dirty_rate_above_bandwidth_precopy_does_not_converge_others_complete():
    pre = run(HOT, "precopy")
    assert pre.outcome == Outcome.DID_NOT_CONVERGE
    for name in ("autoconverge", "postcopy", "hybrid"):
        result = run(HOT, name)
        assert result.outcome == Outcome.COMPLETED, (name, result.message)
        assert result.downtime <= 0.3 + 1e-9
    assert run(HOT, "autoconverge").max_throttle_pct >= 20


def test_literature_ordering_on_a_converging_case():
    pre, post, cold = run(MILD, "precopy"), run(MILD, "postcopy"), run(MILD, "cold")
    assert pre.completed and post.completed and cold.completed
    assert post.downtime < pre.downtime < cold.downtime
    assert post.bytes_total <= pre.bytes_total
    # post-copy sends each page once (plus headers)
    assert post.bytes_total == pytest.approx(MILD.vm.memory * (4096 + 8) / 4096, rel=1e-6)


def test_postcopy_faults_cost_the_guest_time():
    result = run(HOT, "postcopy")
    assert result.postcopy_faults > 0
    per_fault = HOT.link.rtt + (4096 + 8) / HOT.link.link_rate
    assert result.fault_wait_time == pytest.approx(result.postcopy_faults * per_fault, rel=1e-9)
    idle = run(replace(HOT, workload=Workload()), "postcopy")
    assert idle.postcopy_faults == 0 and idle.total_time < result.total_time + 1e-9


def test_autoconverge_steps_follow_qemu():
    result = run(HOT, "autoconverge")
    steps = [e.message for e in result.events if e.kind == "throttle"]
    assert steps[:3] == ["CPU throttle 20 %", "CPU throttle 30 %", "CPU throttle 40 %"]
    assert result.throttle_time > 0
    capped = run(HOT, "autoconverge", cpu_throttle_initial=50, cpu_throttle_increment=45, max_cpu_throttle=90)
    assert [e.message for e in capped.events if e.kind == "throttle"][:2] == ["CPU throttle 50 %", "CPU throttle 90 %"]


def test_throttle_slows_the_writes():
    result = run(HOT, "autoconverge")
    base = [p for p in result.timeline if p.phase == "precopy" and p.throttle_pct == 0][-1]
    throttled = [p for p in result.timeline if p.phase == "precopy" and p.throttle_pct >= 40][0]
    assert throttled.dirty_rate < base.dirty_rate


def test_xen_rules_always_stop():
    result = run(HOT, "precopy", stop_rule="xen")
    assert result.completed
    assert result.bytes_total >= 3 * HOT.vm.memory or result.iterations == 29
    assert result.downtime > 0.3


def test_nova_downtime_steps_match_nova():
    """migration.py downtime_steps with Nova's defaults over 2 GiB: every int(75 × 2) s, 50 + 45 i ms."""
    assert nova.downtime_steps(nova.NovaSettings(), 2) == [(150 * i, int(50 + 45 * i)) for i in range(11)]


def test_hybrid_nova_policy_timeout_actions():
    forced = run(HOT, "hybrid", nova_policy=True, live_migration_completion_timeout=2)
    assert forced.completed and forced.postcopy_faults > 0
    kinds = [e.kind for e in forced.events]
    assert kinds.index("completion-timeout") < kinds.index("postcopy-start")
    assert any(e.kind == "completion-timeout" and e.t == pytest.approx(16.0) for e in forced.events)
    aborted = run(HOT, "hybrid", nova_policy=True, live_migration_completion_timeout=2,
                  live_migration_timeout_action="abort")
    assert aborted.outcome == Outcome.ABORTED and aborted.total_time == pytest.approx(16.0)
    paused = run(HOT, "hybrid", nova_policy=True, live_migration_completion_timeout=2,
                 live_migration_permit_post_copy=False)
    assert paused.completed and paused.postcopy_faults == 0 and paused.downtime > 1.0


def test_compression_xbzrle_saves_bytes_when_the_cache_holds_the_working_set():
    # Pages are cached from the first pass after the bulk stage; the pause then sends deltas.
    plan = replace(MILD, workload=Workload(kind="uniform", dirty_rate=1 * GiB, wss=512 * MiB, delta_fraction=0.05))
    plain = run(plan, "precopy")
    xb = run(plan, "compression", xbzrle_cache_size=1 * GiB)
    assert plain.completed and xb.completed
    assert xb.extra["xbzrle_cache_hits"] > 0
    assert xb.bytes_total < plain.bytes_total
    assert xb.downtime < plain.downtime / 5
    small = run(plan, "compression", xbzrle_cache_size=4 * MiB)
    assert small.extra["xbzrle_cache_hits"] < xb.extra["xbzrle_cache_hits"] / 100


def test_multifd_helps_only_a_cpu_bound_stream():
    plan = replace(MILD, link=Link(link_rate=25e9 / 8, stream_limit=1e9))
    one = run(plan, "compression", xbzrle=False)
    four = run(plan, "compression", xbzrle=False, multifd_channels=4)
    assert four.total_time < one.total_time / 2
    with pytest.raises(InvalidInput, match="QEMU refuses"):
        run(plan, "compression", multifd_channels=4)


def test_zero_pages_cost_a_header():
    plan = replace(MILD, workload=Workload(kind="idle", zero_fraction=0.5))
    with_zero = run(plan, "precopy")
    without = run(plan, "precopy", zero_page_detection=False)
    assert with_zero.extra["zero_pages_sent"] == plan.vm.pages // 2
    assert with_zero.bytes_total < 0.51 * without.bytes_total


def test_block_migration_moves_the_disk_too():
    local = replace(MILD, storage=Storage(shared=False, disk_dirty_rate=20 * MiB))
    result = run(local, "precopy")
    assert result.completed
    assert result.bytes_by_phase["disk"] >= local.vm.disk_size
    assert result.total_time > run(MILD, "precopy").total_time
    stuck = run(replace(MILD, storage=Storage(shared=False, disk_dirty_rate=2 * GiB)), "precopy")
    assert stuck.outcome == Outcome.DID_NOT_CONVERGE and "disk" in stuck.message


def test_cold_migration_phases_add_up():
    local = replace(MILD, storage=Storage(shared=False, stale_fraction=0.25), link=Link(link_rate=1e9, rtt=0.001))
    full = run(local, "cold", shutdown_time=4, boot_time=10)
    assert full.total_time == pytest.approx(4 + 0.001 + (10 * GiB + 8192) / 1e9 + 10)
    assert full.downtime == full.total_time
    delta = run(local, "cold", disk_copy="delta", shutdown_time=4, boot_time=10, digest_rate=2e9)
    blocks = 10 * GiB // (64 << 10)
    assert delta.bytes_by_phase["disk"] == 8192 + blocks * 16 + blocks // 4 * (64 << 10)
    assert delta.bytes_total < full.bytes_total
    shared = run(MILD, "cold")
    assert shared.bytes_total == 8192


def test_bad_options_are_named():
    with pytest.raises(InvalidInput, match="xbzrle_cache_size"):
        run(MILD, "precopy", xbzrle_cache_size=1)
    with pytest.raises(InvalidInput, match="stop_rule"):
        run(MILD, "precopy", stop_rule="vmware")
    with pytest.raises(InvalidInput, match="unknown strategy"):
        run(MILD, "teleport")
    with pytest.raises(InvalidInput, match="downtime_limit"):
        run(MILD, "precopy", downtime_limit="soon")


def test_qemu_bitmap_sync_ends_close_to_the_downtime_limit():
    plan = replace(MILD, workload=Workload(kind="sequential", dirty_rate=400 * MiB))
    by_pass = run(plan, "precopy")
    qemu = run(plan, "precopy", bitmap_sync="qemu", downtime_limit=0.3)
    assert qemu.completed and qemu.iterations > by_pass.iterations
    assert 0.75 * 0.3 <= qemu.downtime <= 0.3 * 4104 / 4096 + plan.link.rtt
    assert qemu.downtime > by_pass.downtime
    assert qemu.total_time == pytest.approx(by_pass.total_time, rel=0.05)
    # near the end QEMU syncs after every 50 ms slice
    gaps = [b.t - a.t for a, b in zip(qemu.timeline[-4:-2], qemu.timeline[-3:-1])]
    assert all(g == pytest.approx(0.05, rel=0.05) for g in gaps)


def test_xbzrle_cache_is_direct_mapped_like_qemus():
    import numpy as np

    from labmig.sim.engine import XbzrleCache

    cache = XbzrleCache(4 * 4096, 4096)
    first = np.array([0, 1, 2, 3], dtype=np.int64)
    cache.commit(first, cache.lookup(first), insert=True)
    assert cache.misses == 4 and cache.hits == 0
    again = np.array([0, 4, 5], dtype=np.int64)           # 0 and 4 share slot 0; 5 is in slot 1
    hit = cache.lookup(again)
    assert hit.tolist() == [True, False, False]
    cache.commit(again[:2], hit[:2], insert=True)         # only the first two were sent
    assert cache.tags.tolist() == [4, 1, 2, 3]
    assert cache.lookup(np.array([1, 4], dtype=np.int64)).tolist() == [True, True]
