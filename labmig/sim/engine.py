"""The live-migration engine: QEMU's RAM migration in virtual time, on dirty bitmaps.

    LiveEngine     the mechanics a strategy drives:
                   run_pass()        one pre-copy pass over the migration bitmap, then
                                     migration_bitmap_sync (the dirty log moves into it)
                   stop_and_copy()   pause, send what is pending + device state, resume
                   postcopy()        resume on the destination; faults + background push
                   mirror_disk()     block migration of a local disk before the RAM
                   result()          the MigrationResult of the run
    PassRecord     what one pass sent, dirtied and left
    XbzrleCache    QEMU's direct-mapped XBZRLE page cache

State is two bitmaps over the guest's pages, as in QEMU: ``pending`` (the
migration bitmap: pages still to send) and ``log`` (the dirty log KVM keeps
between syncs). Migration starts with every page pending (the bulk stage).
A pass sends the pending pages in address order while the workload writes
into the log; at its end the log is fetched and cleared into ``pending``
(``core.fetch_and_clear``): that is one iteration (QEMU's dirty-sync-count).
With ``sync_below`` a pass ends, as in QEMU, once fewer pages than that are
pending after a slice of sending, and the log is OR-ed into what is left.
Strategies (labmig.strategies) decide after each sync: switch over, go on,
throttle, switch to post-copy or give up. Within a pass the guest's writes are
applied after the pages of the same interval were sent, so a page written
during its own pass is always sent again: the ordering the dirty log exists for.

On the wire each page costs its bytes plus an 8-byte header; a zero page costs
the header and one byte (QEMU's zero-page detection); an XBZRLE hit costs the
header, a 3-byte prefix and the encoded delta. Throughput is the link rate,
capped by the plan's ``max_bandwidth`` (QEMU's max-bandwidth) and by
``streams × stream_limit`` when one stream is CPU-bound, less what a disk
mirror needs.

With ``track_versions`` every page carries a version on the source (bumped when
written) and on the destination (set when received): after a run the
destination must hold every page in its latest version, and in post-copy every
page it lacked at the switch must arrive exactly once.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from .. import core
from ..errors import InvalidInput
from ..model import Event, MigrationResult, Outcome, TimelinePoint
from .clock import Agenda, Clock, Scheduled
from .plan import Plan
from .workloads import CHUNK, make_workload

log = logging.getLogger(__name__)

PAGE_HEADER = 8           # address | flags word before every page
ZERO_PAGE_BYTES = 9       # header + the fill byte
XBZRLE_PREFIX = 3         # encoding flag + 16-bit length


@dataclass
class PassRecord:
    """One pre-copy pass and the sync that ended it."""

    iteration: int
    t_start: float
    t_end: float
    pages_sent: int
    wire_bytes: int
    pages_dirtied: int        # distinct pages in the dirty log at the sync
    pending_pages: int        # pages in the migration bitmap after the sync
    interrupted: bool = False
    pages_new: int = 0        # pages the sync added to the migration bitmap (QEMU's num_dirty_pages_period)

    @property
    def duration(self) -> float:
        return self.t_end - self.t_start


class XbzrleCache:
    """QEMU's XBZRLE cache: direct-mapped, slot = page number modulo the slot count
    (the cache's page count rounded down to a power of two).

    Only after the bulk stage are pages cached (on a miss, outside the last
    stage); a page that is in the cache is sent as a delta against its cached
    copy. Pages of one pass that share a slot are handled in address order:
    only the first can hit, and the last one sent stays in the slot.
    """

    def __init__(self, cache_bytes: int, page_size: int) -> None:
        pages = max(1, cache_bytes // page_size)
        self.slots = 1 << (pages.bit_length() - 1)  # QEMU rounds the page count down to a power of two
        self.tags = np.full(self.slots, -1, dtype=np.int64)
        self.hits = 0
        self.misses = 0

    def lookup(self, idx: np.ndarray) -> np.ndarray:
        """Hit mask for the sorted pages ``idx`` if they were sent in that order now."""
        slots = idx % self.slots
        order = np.argsort(slots, kind="stable")
        s_sorted = slots[order]
        first = np.ones(len(idx), dtype=bool)
        first[1:] = s_sorted[1:] != s_sorted[:-1]
        is_first = np.empty(len(idx), dtype=bool)
        is_first[order] = first
        hit: np.ndarray = is_first & (self.tags[slots] == idx)
        return hit

    def commit(self, idx: np.ndarray, hit: np.ndarray, insert: bool) -> None:
        """Record that ``idx`` (with ``hit`` from lookup) were sent; cache the misses."""
        self.hits += int(hit.sum())
        self.misses += int(len(idx) - hit.sum())
        if insert and len(idx):
            # The last page sent in each slot is the one that stays there.
            slots = idx % self.slots
            order = np.argsort(slots, kind="stable")
            s_sorted = slots[order]
            last = np.ones(len(idx), dtype=bool)
            last[:-1] = s_sorted[1:] != s_sorted[:-1]
            winners = order[last]
            self.tags[slots[winners]] = idx[winners]


@dataclass
class Totals:
    bytes_by_phase: dict[str, int] = field(default_factory=dict)
    postcopy_faults: int = 0
    fault_wait_time: float = 0.0
    throttle_time: float = 0.0
    max_throttle_pct: float = 0.0
    zero_pages: int = 0

    def add(self, phase: str, nbytes: float) -> None:
        self.bytes_by_phase[phase] = self.bytes_by_phase.get(phase, 0) + int(round(nbytes))


class LiveEngine:
    """Mechanics of one live migration of ``plan``; a strategy calls the steps."""

    def __init__(self, plan: Plan, *, max_bandwidth: float | None = None, streams: int = 1,
                 zero_page_detection: bool = True, xbzrle_cache: int = 0,
                 track_versions: bool = False) -> None:
        self.plan = plan.validated()
        self.n = plan.vm.pages
        self.page = plan.vm.page_size
        self.rng = np.random.default_rng(plan.seed)
        self.workload = make_workload(plan, self.rng)
        self.clock = Clock()
        self.agenda = Agenda()
        self.totals = Totals()
        self.timeline: list[TimelinePoint] = []
        self.events: list[Event] = []
        self.iterations = 0
        self.throttle_pct = 0.0
        self.downtime = 0.0
        self.downtime_limit = 0.3
        self.interrupt: str | None = None
        self.on_event: Callable[[Scheduled], None] | None = None
        self.zero_page_detection = zero_page_detection
        self.bulk_done = False
        self.in_postcopy = False

        self.pending = core.new_bitmap(self.n)
        self.pending.fill(np.uint64(0xFFFF_FFFF_FFFF_FFFF))
        tail = self.n % 64
        if tail:
            self.pending[-1] = np.uint64((1 << tail) - 1)
        self.log = core.new_bitmap(self.n)
        self.scratch = core.new_bitmap(self.n)
        self.cursor = 0                       # next page a partial pass / push sends
        self._index_buffer = np.empty(min(CHUNK, self.n), dtype=np.int64)
        # Zero pages sit at the top of memory, from a word boundary so they can be counted by popcount.
        zf = self.workload.zero_pages_from()
        self.zero_from = min(self.n, -(-zf // 64) * 64) if zf < self.n else self.n

        bw = plan.link.link_rate
        if max_bandwidth is None:
            max_bandwidth = plan.max_bandwidth
        if max_bandwidth:
            bw = min(bw, max_bandwidth)
        if plan.link.stream_limit:
            bw = min(bw, plan.link.stream_limit * max(1, streams))
        self.wire_rate = bw                   # bytes/s the migration stream achieves
        self.mirror_rate = 0.0                # bytes/s a disk mirror takes from it
        self.xbzrle = XbzrleCache(xbzrle_cache, self.page) if xbzrle_cache else None
        self._xbzrle_pending: tuple[np.ndarray, np.ndarray] | None = None
        self._last_priced = np.empty(0, dtype=np.int64)

        self.track = track_versions
        if track_versions:
            self.src_ver = np.ones(self.n, dtype=np.uint32)
            self.dst_ver = np.zeros(self.n, dtype=np.uint32)
            self.post_received = np.zeros(self.n, dtype=np.uint8)
            self.postcopy_needed: np.ndarray | None = None

    # -- small helpers -------------------------------------------------------
    @property
    def now(self) -> float:
        return self.clock.now

    @property
    def bandwidth(self) -> float:
        """Bytes/s left for RAM: what QEMU measures as its transfer rate."""
        return max(self.wire_rate - self.mirror_rate, 1.0)

    @property
    def pending_pages(self) -> int:
        return core.popcount(self.pending, self.n)

    def event(self, kind: str, message: str = "") -> None:
        self.events.append(Event(round(self.now, 9), kind, message))
        log.debug("t=%.3f %s %s", self.now, kind, message)

    def _zero_pending(self) -> int:
        if self.zero_from >= self.n:
            return 0
        word = self.zero_from // 64
        return core.popcount(self.pending[word:], self.n - self.zero_from)

    def _page_costs(self, idx: np.ndarray, last_stage: bool) -> np.ndarray:
        """Wire bytes of sending each page of ``idx`` now."""
        costs = np.full(len(idx), self.page + PAGE_HEADER, dtype=np.int64)
        if self.zero_page_detection and self.zero_from < self.n:
            costs[idx >= self.zero_from] = ZERO_PAGE_BYTES
        if self.xbzrle is not None and self.bulk_done and not self.in_postcopy:
            normal = costs > ZERO_PAGE_BYTES
            hit = np.zeros(len(idx), dtype=bool)
            hit[normal] = self.xbzrle.lookup(idx[normal])
            encoded = math.ceil(self.plan.workload.delta_fraction * self.page) + 4
            if encoded < self.page:
                costs[hit] = PAGE_HEADER + XBZRLE_PREFIX + encoded
            self._xbzrle_pending = (normal, hit)
        return costs

    def _xbzrle_commit(self, take: int, last_stage: bool) -> None:
        """Cache bookkeeping for the first ``take`` pages priced by the last _page_costs."""
        if self.xbzrle is None or self._xbzrle_pending is None:
            return
        normal, hit = self._xbzrle_pending
        self._xbzrle_pending = None
        sent = self._last_priced[:take]
        mask = normal[:take]
        self.xbzrle.commit(sent[mask], hit[:take][mask], insert=not last_stage)

    def _mark_sent(self, idx: np.ndarray) -> None:
        if self.track:
            self.dst_ver[idx] = self.src_ver[idx]
            if self.in_postcopy:
                self.post_received[idx] += 1

    def _clear_pending(self, idx: np.ndarray) -> None:
        core.set_bits(self.scratch, idx)
        core.bitmap_andnot(self.pending, self.scratch)
        self.scratch[idx >> 6] = 0

    def _dirty(self, dt: float) -> int:
        """Let the guest run ``dt`` seconds on the source; its writes go to the dirty log."""
        if dt <= 0:
            return 0
        speed = 1.0 - self.throttle_pct / 100.0
        if self.throttle_pct > 0:
            self.totals.throttle_time += dt

        def sink(idx: np.ndarray) -> None:
            core.set_bits(self.log, idx)
            if self.track:
                self.src_ver[idx] += 1

        return self.workload.touch(dt, speed, sink)

    def set_throttle(self, pct: float) -> None:
        self.throttle_pct = float(pct)
        self.totals.max_throttle_pct = max(self.totals.max_throttle_pct, self.throttle_pct)
        self.event("throttle", f"CPU throttle {pct:.0f} %")

    def _fire_due(self) -> None:
        for item in self.agenda.pop_due(self.now):
            if self.on_event is not None:
                self.on_event(item)

    # -- the steps -----------------------------------------------------------
    def run_pass(self, phase: str = "precopy", sync_below: float | None = None,
                 check_interval: float = 0.05) -> PassRecord:
        """Send from the migration bitmap, then sync the dirty log into it (one iteration).

        By default the pass sends the whole bitmap and syncs at its end. With
        ``sync_below`` (pages) it behaves as QEMU's migration thread: it sends
        in slices of ``check_interval`` seconds and syncs as soon as the
        pending count is below ``sync_below`` after a slice, pages still in
        the bitmap staying there. Stops early, with ``interrupted`` set, when
        an agenda event sets ``self.interrupt`` (abort, forced post-copy, pause).
        """
        t_start = self.now
        sent = 0
        wire = 0
        simple = self.xbzrle is None and not self.track
        while True:
            remaining = self.pending_pages
            if remaining == 0 or (sync_below is not None and remaining < sync_below):
                break
            event_budget = (self.agenda.next_time() - self.now) * self.bandwidth
            budget = event_budget
            if sync_below is not None:
                need = (remaining - math.ceil(sync_below) + 1) * (self.page + PAGE_HEADER) / self.bandwidth
                slices = max(1, math.ceil(need / check_interval - 1e-9))
                budget = min(budget, slices * check_interval * self.bandwidth)
            zero = self._zero_pending() if simple and self.zero_page_detection else 0
            cost = (remaining - zero) * (self.page + PAGE_HEADER) + zero * ZERO_PAGE_BYTES
            if simple and cost <= budget:
                self.pending.fill(0)
                self.cursor = 0
                self.totals.zero_pages += zero
                n_sent, n_bytes = remaining, cost
            else:
                n_sent, n_bytes = self._send_in_order(budget, last_stage=False)
            sent += n_sent
            wire += n_bytes
            if self.pending_pages == 0 or budget < event_budget:
                dt = n_bytes / self.bandwidth
                self._dirty(dt)
                self.clock.advance(dt)
                if self.agenda.next_time() > self.now + 1e-12:
                    continue
            else:
                # The pass was cut by an event: run on to it (less than a page's time is left).
                self._dirty(self.agenda.next_time() - self.now)
            self.clock.advance_to(self.agenda.next_time())
            self._fire_due()
            if self.interrupt:
                break
        self.totals.add(phase, wire)
        if self.mirror_rate:
            self.totals.add("disk", self.mirror_rate * (self.now - t_start))
        interrupted = bool(self.interrupt)
        dirtied = new = 0
        if not interrupted:
            if self.pending_pages == 0:
                dirtied = new = core.fetch_and_clear(self.log, self.pending)
                self.cursor = 0
            else:
                before = self.pending_pages
                dirtied = core.popcount(self.log, self.n)
                core.bitmap_or(self.pending, self.log)
                self.log.fill(0)
                new = self.pending_pages - before
            self.iterations += 1
            self.bulk_done = True
        pending = self.pending_pages
        rec = PassRecord(self.iterations, t_start, self.now, sent, wire, dirtied, pending, interrupted, new)
        dur = rec.duration
        self.timeline.append(TimelinePoint(
            t=round(self.now, 9), phase=phase, iteration=self.iterations, pages_sent=sent,
            pages_dirtied=dirtied, remaining_bytes=pending * self.page,
            bytes_sent_total=sum(self.totals.bytes_by_phase.values()),
            bandwidth=wire / dur if dur > 0 else 0.0,
            dirty_rate=dirtied * self.page / dur if dur > 0 else 0.0,
            throttle_pct=self.throttle_pct,
            expected_downtime=pending * (self.page + PAGE_HEADER) / self.bandwidth))
        return rec

    def _send_in_order(self, budget: float, last_stage: bool) -> tuple[int, int]:
        """Send pending pages from ``cursor`` in address order until ``budget`` bytes are used."""
        cheapest = self.page + PAGE_HEADER
        if self.zero_page_detection and self.zero_from < self.n:
            cheapest = ZERO_PAGE_BYTES
        if self.xbzrle is not None:
            cheapest = min(cheapest, PAGE_HEADER + XBZRLE_PREFIX + 4)
        sent = 0
        wire = 0
        while budget - wire > 0:
            want = CHUNK if budget == float("inf") else int(min(CHUNK, (budget - wire) // cheapest + 1))
            out = self._index_buffer[:want]
            count, _ = core.find_set_bits(self.pending, self.n, self.cursor, out)
            if count == 0:
                if self.cursor == 0:
                    break
                self.cursor = 0
                continue
            idx = out[:count].copy()
            costs = self._page_costs(idx, last_stage)
            self._last_priced = idx
            cum = np.cumsum(costs)
            take = int(np.searchsorted(cum, budget - wire, side="right"))
            if take == 0:
                break
            self._xbzrle_commit(take, last_stage)
            idx = idx[:take]
            self._mark_sent(idx)
            self._clear_pending(idx)
            if self.zero_page_detection:
                self.totals.zero_pages += int((idx >= self.zero_from).sum())
            sent += take
            wire += int(cum[take - 1])
            self.cursor = int(idx[-1]) + 1
            if take < count:
                break
        return sent, wire

    def sync(self) -> int:
        """An extra migration_bitmap_sync (pending |= log); returns the pages it added."""
        before = self.pending_pages
        core.bitmap_or(self.pending, self.log)
        self.log.fill(0)
        return self.pending_pages - before

    def stop_and_copy(self) -> float:
        """Pause the guest, send all that is pending and the device state; return the downtime."""
        self.sync()
        pages = self.pending_pages
        _, wire = self._send_in_order(float("inf"), last_stage=True)
        wire += self.plan.vm.device_state
        self.totals.add("stop-and-copy", wire)
        downtime = wire / self.bandwidth + self.plan.link.rtt
        self.clock.advance(downtime)
        if self.mirror_rate:
            self.totals.add("disk", self.mirror_rate * downtime)
        self.downtime += downtime
        self.timeline.append(TimelinePoint(
            t=round(self.now, 9), phase="stop-and-copy", iteration=self.iterations, pages_sent=pages,
            remaining_bytes=0, bytes_sent_total=sum(self.totals.bytes_by_phase.values()),
            bandwidth=wire / downtime if downtime > 0 else 0.0, throttle_pct=self.throttle_pct))
        self.event("switchover", f"{pages} pages in {downtime * 1000:.1f} ms of downtime")
        self.throttle_pct = 0.0
        return downtime

    def postcopy(self, step: float = 0.1) -> float:
        """Switch to post-copy: resume on the destination, pull faulted pages, push the rest.

        Returns the downtime of the switch (device state and a round trip).
        Each step of ``step`` seconds: the guest touches pages; those still on
        the source fault: each stalls a vCPU for a round trip plus the page's
        transfer (faulted pages go first, as on QEMU's post-copy preempt
        channel), and the rest of the bandwidth pushes pending pages in address
        order. The guest's speed in a step splits each vCPU's time between
        running and waiting, using the fault density of the previous step:
        ``V dt = s V dt + (density s dt) × fault cost``.
        """
        self.sync()
        self.in_postcopy = True
        if self.track:
            self.postcopy_needed = self._pending_mask()
        switch = (self.plan.vm.device_state) / self.bandwidth + self.plan.link.rtt
        self.totals.add("stop-and-copy", self.plan.vm.device_state)
        self.clock.advance(switch)
        self.downtime += switch
        self.event("postcopy-start", f"{self.pending_pages} pages left on the source")
        self.throttle_pct = 0.0
        page_wire = self.page + PAGE_HEADER
        fault_cost = self.plan.link.rtt + page_wire / self.bandwidth
        vcpus = self.plan.vm.vcpus
        # Faults per second of full-speed guest time; first guess: every write to a pending page.
        density = self.workload.write_rate * self.pending_pages / self.n
        credit = 0.0                          # bandwidth left over by whole pages, carried on
        step_no = 0
        while True:
            remaining = self.pending_pages
            if remaining == 0:
                break
            step_no += 1
            dt = min(step, remaining * page_wire / self.bandwidth)
            speed = vcpus / (vcpus + density * fault_cost)
            touched: list[np.ndarray] = []
            self.workload.touch(dt, speed, touched.append)
            faults = 0
            wire = 0
            if touched:
                idx = np.concatenate(touched)
                bits = (self.pending[idx >> 6] >> (idx & 63).astype(np.uint64)) & np.uint64(1)
                faulted = idx[bits.astype(bool)]
                faults = len(faulted)
                if faults:
                    costs = self._page_costs(faulted, last_stage=True)
                    wire += int(costs.sum())
                    self._mark_sent(faulted)
                    self._clear_pending(faulted)
            budget = max(0.0, self.bandwidth * dt - wire + credit)
            pushed, push_wire = self._send_in_order(budget, last_stage=True) if budget else (0, 0)
            credit = budget - push_wire
            wire += push_wire
            if self.pending_pages:
                dt_used = max(dt, (wire - push_wire) / self.bandwidth)  # faults alone may fill the link
            else:
                dt_used = max(dt - credit / self.bandwidth, 1e-12)
            self.clock.advance(dt_used)
            wait = faults * fault_cost
            self.totals.postcopy_faults += faults
            self.totals.fault_wait_time += wait
            self.totals.add("postcopy", wire)
            density = faults / (speed * dt)
            self.timeline.append(TimelinePoint(
                t=round(self.now, 9), phase="postcopy", iteration=step_no, pages_sent=faults + pushed,
                faults=faults, remaining_bytes=self.pending_pages * self.page,
                bytes_sent_total=sum(self.totals.bytes_by_phase.values()),
                bandwidth=wire / dt_used))
        self.event("postcopy-done", f"{self.totals.postcopy_faults} faults")
        return switch

    def _pending_mask(self) -> np.ndarray:
        bits = np.unpackbits(self.pending.view(np.uint8), bitorder="little")[: self.n]
        return bits.astype(bool)

    def mirror_disk(self, disk_bytes: int, write_rate: float, disk_bandwidth: float = 0.0) -> bool:
        """Block migration: copy a local disk while the guest writes it, then keep mirroring.

        A mirror job copies the disk and, as it goes, every block written
        meanwhile: at a transfer rate ``b`` and a write rate ``w < b`` it is in
        sync after ``D / (b - w)`` seconds. Then writes keep flowing at ``w``
        beside the RAM. Returns False when the writes outrun the copy.
        """
        rate = self.wire_rate if not disk_bandwidth else min(self.wire_rate, disk_bandwidth)
        if write_rate >= rate:
            self.event("disk-not-converging", "the guest writes its disk faster than it can be copied")
            return False
        t = disk_bytes / (rate - write_rate)
        self.totals.add("disk", rate * t)
        self.clock.advance(t)
        self._dirty(t)
        self.log.fill(0)  # RAM dirty logging starts with the RAM migration; every page is pending anyway
        self.mirror_rate = write_rate
        self.timeline.append(TimelinePoint(
            t=round(self.now, 9), phase="disk", remaining_bytes=self.n * self.page,
            bytes_sent_total=sum(self.totals.bytes_by_phase.values()), bandwidth=rate))
        self.event("disk-ready", f"mirror in sync after {t:.2f} s")
        return True

    # -- checking and reporting ---------------------------------------------
    def destination_check(self) -> dict[str, int]:
        """Version bookkeeping after a completed run (needs ``track_versions``)."""
        if not self.track:
            raise InvalidInput("destination_check needs track_versions=True", "create the engine with it")
        report = {"stale_pages": int((self.dst_ver != self.src_ver).sum()),
                  "missing_pages": int((self.dst_ver == 0).sum())}
        if self.postcopy_needed is not None:
            needed = self.postcopy_needed
            report["postcopy_not_once"] = int((self.post_received[needed] != 1).sum())
            report["postcopy_unneeded"] = int((self.post_received[~needed] != 0).sum())
        return report

    def result(self, strategy: str, outcome: Outcome, message: str) -> MigrationResult:
        plan = self.plan
        if outcome != Outcome.COMPLETED and self.downtime == 0:
            self.event(str(outcome), message)
        extra = {"pages": self.n, "zero_pages_sent": self.totals.zero_pages,
                 "bandwidth": self.bandwidth}
        if self.xbzrle is not None:
            extra.update(xbzrle_cache_hits=self.xbzrle.hits, xbzrle_cache_misses=self.xbzrle.misses)
        return MigrationResult(
            kind="live", strategy=strategy, backend="sim", outcome=outcome,
            total_time=self.now, downtime=self.downtime, vm=plan.vm.name, source="src", destination="dst",
            memory_bytes=plan.vm.memory, bytes_by_phase=dict(self.totals.bytes_by_phase),
            iterations=self.iterations, postcopy_faults=self.totals.postcopy_faults,
            fault_wait_time=self.totals.fault_wait_time, throttle_time=self.totals.throttle_time,
            max_throttle_pct=self.totals.max_throttle_pct, message=message,
            timeline=self.timeline, events=self.events, plan=plan.to_dict(), extra=extra)
