"""Exact, deterministic timelines on small plans."""
import json
from dataclasses import replace

import pytest

from labmig.model import MigrationResult, Outcome
from labmig.sim.plan import VM, Link, Plan, Workload
from labmig.sim.run import simulate

# 64 pages; the link moves exactly 16 pages (of 4096 + 8 header bytes) a second;
# the guest streams over 4 distinct pages a second.
SMALL = Plan(vm=VM(memory=64 * 4096), workload=Workload(kind="sequential", dirty_rate=4 * 4096),
             link=Link(link_rate=16 * 4104, rtt=0.0), options={"downtime_limit": 0.3})


def test_precopy_timeline_is_exact():
    r = simulate(SMALL)
    assert r.outcome == Outcome.COMPLETED
    got = [(p.t, p.phase, p.iteration, p.pages_sent, p.pages_dirtied, p.remaining_bytes) for p in r.timeline]
    assert got == [
        (4.0, "precopy", 1, 64, 16, 16 * 4096),       # bulk: 64 pages in 4 s, 16 written meanwhile
        (5.0, "precopy", 2, 16, 4, 4 * 4096),         # 16 pages in 1 s; 4 pages < 16*4104*0.3/4096
        (5.25, "stop-and-copy", 2, 4, 0, 0),          # pause: 4 pages in 0.25 s
    ]
    assert r.total_time == 5.25 and r.downtime == 0.25
    assert r.bytes_by_phase == {"precopy": 80 * 4104, "stop-and-copy": 4 * 4104}
    assert [e.kind for e in r.events] == ["switchover"]


def test_postcopy_timeline_is_exact():
    r = simulate(replace(SMALL, workload=Workload(), strategy="postcopy",
                         options={"postcopy_step": 1.0}, link=Link(link_rate=16 * 4104, rtt=0.01)))
    assert [(p.t, p.pages_sent) for p in r.timeline] == [
        (pytest.approx(1.01), 16), (pytest.approx(2.01), 16), (pytest.approx(3.01), 16), (pytest.approx(4.01), 16)]
    assert r.downtime == pytest.approx(0.01) and r.total_time == pytest.approx(4.01)


def test_cold_timeline_is_exact():
    r = simulate(replace(SMALL, strategy="cold", options={"shutdown_time": 3, "boot_time": 7}))
    assert [(p.t, p.phase) for p in r.timeline] == [(3.0, "shutdown"), (pytest.approx(3 + 8192 / (16 * 4104)), "disk"),
                                                   (pytest.approx(10 + 8192 / (16 * 4104)), "boot")]


def test_same_seed_same_result_other_seed_other_result():
    plan = Plan(vm=VM(memory=64 << 20), workload=Workload(kind="uniform", dirty_rate=40 << 20, wss=16 << 20),
                link=Link(link_rate=100e6), seed=11)
    a, b = simulate(plan).to_json(), simulate(plan).to_json()
    assert a == b
    assert simulate(replace(plan, seed=12)).to_json() != a


def test_result_round_trips_json_and_csv():
    r = simulate(SMALL)
    again = MigrationResult.from_json(r.to_json())
    assert again.to_dict() == r.to_dict()
    lines = r.timeline_csv().splitlines()
    assert lines[0].startswith("t,phase,iteration") and len(lines) == 1 + len(r.timeline)
    assert json.loads(r.to_json())["plan"]["workload"]["kind"] == "sequential"
