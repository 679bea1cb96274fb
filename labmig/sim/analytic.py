"""The closed-form model of pre-copy the engine is tested against.

    stream_rate(plan)     what the stream gets: the link rate under the max_bandwidth cap
    PrecopyModel          round volumes, iterations, total time, downtime, bytes
    precopy_model(plan)   the model for a plan whose workload dirties distinct pages
    saturation(t, ...)    dirty share of a working set under uniform random writes
    uniform_next_round()  expected next round under uniform writes
    postcopy_idle(plan)   post-copy of an idle guest

Derivation (pass model, as the engine runs it). Let ``M`` be the pages of
memory, ``P`` the page size, ``w = P + 8`` the wire bytes of a page, ``B`` the
stream's rate (bytes/s: the link rate, or max_bandwidth when lower), so ``b = B / w`` pages/s; the guest dirties ``r`` distinct
pages a second (the ``sequential`` workload, ``r = dirty_rate / P``) within a
working set of ``W`` pages; ``ρ = r / b``; ``d`` the downtime limit.

* Pass 0 (bulk stage) sends every page: ``V0 = M``, taking ``T0 = V0 / b``.
* Pass ``i`` takes ``Ti = Vi / b``; the pages dirtied meanwhile are all
  distinct while ``r Ti <= W``, and are exactly the next round:
  ``V(i+1) = min(W, r Ti) = min(W, ρ Vi)``; without the cap ``Vi = M ρ^i``.
* After each pass the dirty log is synced and QEMU's rule switches over when
  ``V(i) P < B d`` (bandwidth measured while sending is ``B``), so the number
  of passes is ``n = min{ i >= 1 : M ρ^i P < B d }``, i.e.
  ``n = max(1, floor(log(B d / (M P)) / log ρ) + 1)`` for ``0 < ρ < 1``.
* Downtime: ``(Vn w + S) / B + RTT`` (``S`` device state).
* Total time: ``(M w / B) (1 - ρ^n) / (1 - ρ) + downtime``;
  bytes on the wire: ``M w (1 - ρ^(n+1)) / (1 - ρ) + S``.
* It never converges when the capped volumes stay above the threshold:
  ``ρ >= 1`` and ``min(W, M) P >= B d``.

Uniform random writes at ``r`` page writes a second over ``W`` pages dirty each
page independently with probability ``1 - exp(-r t / W)`` in ``t`` seconds
(see :mod:`labmig.sim.workloads`), so the dirty share saturates as
``1 - exp(-λ t)``, ``λ = r / W``, and the expected next round is
``W (1 - exp(-r Ti / W))``.

This is the engine's default ``bitmap_sync="pass"``. QEMU itself syncs as soon
as the pending estimate drops below the threshold and then after every slice
of sending (``bitmap_sync="qemu"``): the same volumes in the bulk, but an
endgame of many short iterations whose downtime approaches the limit rather
than ``Vn w / B``; that mode is checked by invariants, not by this formula.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from .engine import PAGE_HEADER
from .plan import Plan


@dataclass
class PrecopyModel:
    volumes: list[float] = field(default_factory=list)   # pages sent in pass 0, 1, … and the pause (last)
    iterations: int = 0
    converges: bool = True
    total_time: float = 0.0
    downtime: float = 0.0
    bytes_total: float = 0.0


def stream_rate(plan: Plan) -> float:
    """Bytes/s the migration stream gets: the link rate, under the plan's max_bandwidth cap."""
    rate = plan.link.link_rate
    return min(rate, plan.max_bandwidth) if plan.max_bandwidth else rate


def precopy_model(plan: Plan, downtime_limit: float = 0.3, max_passes: int = 10_000) -> PrecopyModel:
    """The closed-form pre-copy of ``plan`` (its workload read as ``r`` distinct pages a second)."""
    vm, link = plan.vm, plan.link
    M, P = vm.pages, vm.page_size
    W = plan.wss_pages if plan.workload.kind != "idle" else M
    r = plan.workload.dirty_rate / P if plan.workload.kind != "idle" else 0.0
    w = P + PAGE_HEADER
    B = stream_rate(plan)
    b = B / w
    rho = r / b
    threshold_pages = B * downtime_limit / P
    model = PrecopyModel()
    if rho >= 1 and min(W, M) >= threshold_pages:
        model.converges = False
        return model
    if rho < 1 and min(W, M) >= M:
        # No cap: the geometric closed form.
        if rho == 0:
            n = 1
        else:
            n = max(1, math.floor(math.log(threshold_pages / M) / math.log(rho)) + 1)
            if M * rho ** (n - 1) < threshold_pages and n > 1:
                n -= 1
        model.volumes = [M * rho ** i for i in range(n + 1)]
        model.iterations = n
        model.downtime = (model.volumes[-1] * w + vm.device_state) / B + link.rtt
        model.total_time = (M * w / B) * _geo(rho, n) + model.downtime
        model.bytes_total = M * w * _geo(rho, n + 1) + vm.device_state
        return model
    # With the working-set cap: the same recurrence, evaluated.
    volumes = [float(M)]
    while True:
        nxt = min(W, rho * volumes[-1])
        volumes.append(nxt)
        if nxt < threshold_pages:
            break
        if len(volumes) > max_passes:
            model.converges = False
            return model
    model.volumes = volumes
    model.iterations = len(volumes) - 1
    model.downtime = (volumes[-1] * w + vm.device_state) / B + link.rtt
    model.total_time = sum(volumes[:-1]) * w / B + model.downtime
    model.bytes_total = sum(volumes) * w + vm.device_state
    return model


def _geo(rho: float, n: int) -> float:
    """1 + ρ + … + ρ^(n-1)."""
    return float(n) if rho == 1 else (1 - rho ** n) / (1 - rho)


def saturation(t: float, write_rate: float, wss_pages: int) -> float:
    """Share of the working set dirtied after ``t`` s of uniform writes at ``write_rate`` pages/s."""
    return -math.expm1(-write_rate * t / wss_pages)


def uniform_next_round(pages_sent: float, plan: Plan) -> float:
    """Expected pages dirtied (distinct) while ``pages_sent`` pages cross, under uniform writes."""
    t = pages_sent * (plan.vm.page_size + PAGE_HEADER) / stream_rate(plan)
    W = plan.wss_pages
    return W * saturation(t, plan.workload.dirty_rate / plan.vm.page_size, W)


def postcopy_idle(plan: Plan) -> tuple[float, float, float]:
    """(total time, downtime, bytes) of pure post-copy of a guest that writes nothing."""
    vm, link = plan.vm, plan.link
    rate = stream_rate(plan)
    downtime = vm.device_state / rate + link.rtt
    push = vm.pages * (vm.page_size + PAGE_HEADER)
    return downtime + push / rate, downtime, push + vm.device_state
