"""Invariants on Hypothesis-generated plans, with page versions tracked.

Every page carries a version on the source (bumped on each write) and on the
destination (the version it received). A completed run must leave the
destination with every page in its latest version; in post-copy each page the
destination lacked at the switch must arrive exactly once.
"""
from dataclasses import replace

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from labmig.model import Outcome
from labmig.sim.plan import VM, Link, Plan, Workload
from labmig.strategies import make_strategy

LIVE = ["precopy", "postcopy", "hybrid", "autoconverge", "compression"]


@st.composite
def plans(draw):
    page = draw(st.sampled_from([4096, 8192]))
    pages = draw(st.integers(16, 3000))
    bandwidth = draw(st.floats(1e6, 1e8))
    kind = draw(st.sampled_from(["idle", "uniform", "hotcold", "sequential"]))
    wss_pages = draw(st.integers(1, pages))
    rate = draw(st.floats(0.0, 2.0)) * bandwidth
    workload = Workload(kind=kind, dirty_rate=rate, wss=wss_pages * page,
                        zero_fraction=draw(st.sampled_from([0.0, 0.0, 0.3])),
                        delta_fraction=draw(st.floats(0.0, 1.0)))
    strategy = draw(st.sampled_from(LIVE))
    options = {"downtime_limit": draw(st.sampled_from([0.001, 0.05, 0.3, 2.0]))}
    if strategy in ("postcopy", "hybrid"):
        options["postcopy_after_passes"] = draw(st.integers(0, 3))
    if strategy == "hybrid" and draw(st.booleans()):
        options.update(nova_policy=True, live_migration_completion_timeout=draw(st.floats(1.0, 2000.0)),
                       live_migration_timeout_action=draw(st.sampled_from(["abort", "force_complete"])),
                       live_migration_permit_post_copy=draw(st.booleans()))
    if strategy == "compression":
        options["xbzrle_cache_size"] = draw(st.integers(1, pages)) * page
    if strategy == "precopy":
        options["stop_rule"] = draw(st.sampled_from(["qemu", "xen"]))
    if strategy != "postcopy" or options.get("postcopy_after_passes"):
        options["bitmap_sync"] = draw(st.sampled_from(["pass", "qemu"]))
    return Plan(vm=VM(memory=pages * page, page_size=page, vcpus=draw(st.integers(1, 4))),
                workload=workload, link=Link(link_rate=bandwidth, rtt=draw(st.floats(0.0, 0.01))),
                strategy=strategy, options=options, seed=draw(st.integers(0, 2**32 - 1)), max_time=300.0)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(plans())
def test_invariants(plan):
    strategy = make_strategy(plan.strategy, plan.options)
    r = strategy.simulate(plan, track_versions=True)
    assert 0 <= r.downtime <= r.total_time
    assert r.outcome in (Outcome.COMPLETED, Outcome.DID_NOT_CONVERGE, Outcome.ABORTED)
    times = [p.t for p in r.timeline]
    assert times == sorted(times)
    if r.outcome != Outcome.COMPLETED:
        assert r.downtime == 0
        return
    report = strategy.engine.destination_check()
    assert report["stale_pages"] == 0 and report["missing_pages"] == 0, report
    assert report.get("postcopy_not_once", 0) == 0 and report.get("postcopy_unneeded", 0) == 0, report
    pages_sent = sum(p.pages_sent for p in r.timeline)
    assert pages_sent >= plan.vm.pages
    if plan.workload.zero_fraction == 0 and r.postcopy_faults == 0 and plan.strategy != "compression":
        assert r.bytes_total >= plan.vm.memory
    if plan.strategy in ("precopy", "autoconverge", "compression"):
        assert r.bytes_total >= plan.vm.memory * (1 - plan.workload.zero_fraction)
    if r.postcopy_faults or any(e.kind == "postcopy-start" for e in r.events):
        assert r.bytes_by_phase.get("postcopy", 0) > 0 or r.timeline[-1].phase != "postcopy"


@settings(max_examples=20, deadline=None)
@given(plans())
def test_deterministic(plan):
    assert make_strategy(plan.strategy, plan.options).simulate(plan).to_json() == \
        make_strategy(plan.strategy, plan.options).simulate(replace(plan)).to_json()
