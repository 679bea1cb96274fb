"""The engine against the closed-form model of labmig.sim.analytic (within 1 %)."""
import math

import numpy as np
import pytest

from labmig import core
from labmig.model import Outcome
from labmig.sim.plan import VM, Link, Plan, Workload
from labmig.sim.run import simulate
from labmig.sim.analytic import postcopy_idle, precopy_model, saturation, uniform_next_round
from labmig.sim.workloads import UniformWorkload

GiB, MiB = 1 << 30, 1 << 20

CASES = [
    # memory, dirty rate (distinct pages/s x page), bandwidth, wss, downtime limit
    (8 * GiB, 400 * MiB, 10e9 / 8, 0, 0.3),
    (4 * GiB, 900 * MiB, 10e9 / 8, 0, 0.3),
    (2 * GiB, 100 * MiB, 1e9 / 8, 0, 0.3),
    (8 * GiB, 1 * GiB, 10e9 / 8, 1 * GiB, 0.3),
    (16 * GiB, 2 * GiB, 25e9 / 8, 0, 0.05),
]


@pytest.mark.parametrize("memory,rate,bandwidth,wss,limit", CASES)
def test_precopy_matches_closed_form(memory, rate, bandwidth, wss, limit):
    plan = Plan(vm=VM(memory=memory), workload=Workload(kind="sequential", dirty_rate=rate, wss=wss),
                link=Link(link_rate=bandwidth, rtt=0.001), options={"downtime_limit": limit})
    result = simulate(plan)
    model = precopy_model(plan, limit)
    assert result.outcome == Outcome.COMPLETED
    assert result.iterations == model.iterations
    volumes = [p.pages_sent for p in result.timeline]
    assert len(volumes) == len(model.volumes)
    for got, want in zip(volumes, model.volumes):
        assert got == pytest.approx(want, rel=0.01)
    assert result.total_time == pytest.approx(model.total_time, rel=0.01)
    assert result.downtime == pytest.approx(model.downtime, rel=0.01)
    assert result.bytes_total == pytest.approx(model.bytes_total, rel=0.01)


def test_closed_form_iteration_count_formula():
    # n = floor(log(Bd/(MP)) / log rho) + 1 : for rho = 1/2 and M P = 50 B d, n = 6.
    page, bw, limit = 4096, 1e9, 0.1
    memory = int(50 * bw * limit) // page * page
    rho = 0.5
    rate = rho * bw / (page + 8) * page
    plan = Plan(vm=VM(memory=memory, page_size=page), workload=Workload(kind="sequential", dirty_rate=rate),
                link=Link(link_rate=bw, rtt=0.0), options={"downtime_limit": limit})
    model = precopy_model(plan, limit)
    assert model.iterations == math.floor(math.log(bw * limit / memory) / math.log(rho)) + 1 == 6
    assert simulate(plan).iterations == 6


def test_non_convergence_when_dirty_rate_exceeds_bandwidth():
    plan = Plan(vm=VM(memory=4 * GiB), workload=Workload(kind="sequential", dirty_rate=2 * GiB, wss=2 * GiB),
                link=Link(link_rate=10e9 / 8))
    assert not precopy_model(plan).converges
    result = simulate(plan)
    assert result.outcome == Outcome.DID_NOT_CONVERGE
    assert "did not converge" in result.message and "threshold" in result.message
    assert result.downtime == 0


def test_uniform_writes_saturate_as_one_minus_exp():
    pages = 1 << 21
    plan = Plan(vm=VM(memory=pages * 4096), workload=Workload(kind="uniform", dirty_rate=200 * MiB))
    wl = UniformWorkload(plan, np.random.default_rng(7))
    log = core.new_bitmap(pages)
    rate = plan.workload.dirty_rate / 4096
    t = 0.0
    for dt in (0.5, 1.5, 3.0, 5.0, 10.0, 20.0):
        wl.touch(dt, 1.0, lambda idx: core.set_bits(log, idx))
        t += dt
        got = core.popcount(log, pages) / pages
        assert got == pytest.approx(saturation(t, rate, pages), rel=0.01)


def test_uniform_rounds_follow_expected_saturation():
    plan = Plan(vm=VM(memory=8 * GiB), workload=Workload(kind="uniform", dirty_rate=800 * MiB, wss=2 * GiB),
                link=Link(link_rate=10e9 / 8), options={"downtime_limit": 0.05})
    result = simulate(plan)
    points = result.timeline[:-1]
    assert len(points) >= 3
    for point in points:
        expected = uniform_next_round(point.pages_sent, plan)
        # within 1 %, or 4 standard deviations of a binomial count for the small last rounds
        assert abs(point.pages_dirtied - expected) <= max(0.01 * expected, 4 * math.sqrt(expected))


def test_postcopy_of_idle_guest_is_one_push():
    plan = Plan(vm=VM(memory=1 * GiB, device_state=2 * MiB), link=Link(link_rate=1e9, rtt=0.002),
                strategy="postcopy")
    result = simulate(plan)
    total, downtime, nbytes = postcopy_idle(plan)
    assert result.total_time == pytest.approx(total, rel=1e-6)
    assert result.downtime == pytest.approx(downtime, rel=1e-9)
    assert result.bytes_total == pytest.approx(nbytes, rel=1e-9)
    assert result.postcopy_faults == 0
