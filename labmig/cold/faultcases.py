"""The cases of the cold-migration fault campaign, each one trial at a time on a Campaign's guest.

    CASES            name -> Case (what it does, its function); ``bench.bench_cold_crash`` runs them
    random_kill      SIGKILL ``labmig migrate cold`` after a delay drawn uniformly over a normal
                     run's duration, then ``labmig recover``
    finish_kill      the same during ``labmig confirm`` (``confirm``), ``labmig confirm
                     --delete-source-disks`` (``confirm-delete``) or ``labmig revert`` (``revert``),
                     then ``labmig recover`` and, when the kill came before the command's first
                     record, the command again
    two_migrations   two ``labmig migrate cold --confirm`` of the VM started together: one exits
                     3 naming the other as the lock's holder, the other completes
    recover_during   ``labmig recover`` while a migration runs: it skips the VM ("skipped: being
                     migrated by pid N"), the migration completes
    link_cut         the lab's link cut during the disk copy (fault ``link-cut``): the VM runs on
                     the source again within 60 s of the cut
    disk_full        the destination's image directory full (fault ``fill-disk``) before the
                     migration (``before``: refused), or filled during it once its prechecks
                     passed, before its copy (``during``): it fails, the VM runs on the source,
                     no half-written copy looks complete
    round_trip       cold there and back N times, each move confirmed; one TrialResult per move
                     with the bytes it put on the wire

Every trial starts from ``Campaign.make_ready`` (the VM running on one host, no open
journal), goes from where the VM runs to the other host, and ends with
``campaign.verify_end``; the VM may end on either host, and the next trial starts there.
Random draws come from ``campaign.trial_rng`` (seed, case, trial number).
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any, Callable

from .campaign import Campaign, Verdict, finish_args, other, trial_rng, verify_end
from .journal import Step
from .trials import TrialResult, disk_digest

MiB = 1 << 20
STEPS_TO_RECOVER_DURING = (Step.SHUTDOWN_REQUESTED, Step.SOURCE_STOPPED, Step.DISK_COPYING, Step.DISK_COPIED,
                           Step.DEST_STARTED)


@dataclass(frozen=True)
class Case:
    name: str
    summary: str
    fn: Callable[[Campaign, int], TrialResult]


def _result(case: str, t0: float, head: str, verdict: Verdict, problems: list[str], step: str | None = None,
            killed: bool = False, **checks: Any) -> TrialResult:
    """One trial's result: its line is what happened, then "ok: …" or "FAILED: " and every problem seen."""
    ok = verdict.ok and not problems
    tail = f"ok: {verdict.words()}" if ok else "FAILED: " + "; ".join(problems + verdict.problems)
    return TrialResult(step=step or "", ok=ok, ended_on=verdict.ended_on, killed=killed,
                       seconds=time.monotonic() - t0, detail=f"{head} -> {tail}", checks=dict(checks), case=case)


def _start_point(c: Campaign) -> tuple[str, str, int, str, str]:
    """(source, destination, boot counter, source disk digest, what make_ready did) for a trial."""
    ready = c.make_ready()
    src = c.home()
    boots = c.boot() or 0
    return src, other(src), boots, disk_digest(c.disk(src)), ready


def _recover_actions(done: list[dict[str, Any]], vm: str) -> list[str]:
    return [str(a) for d in done if d.get("vm") == vm for a in (d.get("actions") or [])]


def random_kill(c: Campaign, i: int) -> TrialResult:
    """SIGKILL a migration at a uniformly drawn time, recover, check; a VM left awaiting confirm is reverted."""
    t0 = time.monotonic()
    rng = trial_rng(c.seed, "random-kill", i)
    normal = c.duration("migrate")
    src, dst, boots, before, ready = _start_point(c)
    u = rng.random()
    mig = c.start("migrate", "cold", c.vm, "--from", src, "--to", dst, "--shutdown-timeout", "1s")
    killed = c.kill_after(mig, u * normal)
    last = c.last_step()
    problems = [] if killed or mig.proc.returncode == 0 else \
        [f"the migration ended by itself with exit {mig.proc.returncode}: {mig.tail()}"]
    code, done, rec = c.recover()
    if code != 0:
        problems.append(f"recover exited {code}: {rec.tail()}")
    actions = _recover_actions(done, c.vm)
    on_dst = last == Step.GUEST_UP
    if on_dst:
        verdict = verify_end(c, dst, boots, awaiting=True, same={src: before})
    else:
        restarted = True if "start-source" in actions else (False if not actions else None)
        verdict = verify_end(c, src, boots, restarted=restarted, same={src: before})
    if on_dst and verdict.ok:
        back = c.run("revert", c.vm)
        if back.proc.returncode != 0:
            problems.append(f"the revert afterwards failed: {back.tail()}")
    how = "killed" if killed else "ended by itself before the kill drawn"
    head = (f"{how} at {u * normal:.2f} of {normal:.2f} s (u={u:.3f}) after '{last}'; "
            f"recover {','.join(actions) or 'did nothing'}")
    return _result("random-kill", t0, head, verdict, problems, last, killed, u=u, kill_at=u * normal,
                   normal=normal, recover=done, ready=ready)


def finish_kill(kind: str) -> Callable[[Campaign, int], TrialResult]:
    """A case killing ``labmig confirm`` (``confirm``, ``confirm-delete``) or ``labmig revert`` (``revert``)."""
    case = f"{kind}-kill"

    def trial(c: Campaign, i: int) -> TrialResult:
        t0 = time.monotonic()
        rng = trial_rng(c.seed, case, i)
        normal = c.duration(kind)
        src, dst, boots, before, ready = _start_point(c)
        mig = c.migrate(src, dst)
        if mig.proc.returncode != 0:
            return TrialResult(step="", ok=False, seconds=time.monotonic() - t0, case=case,
                               detail=f"the migration before the {kind} failed: {mig.tail()}")
        c.boot(at_least=boots + 1)
        u = rng.random()
        cmd = finish_args(kind, c.vm)
        killed = c.kill_after(c.start(*cmd), u * normal)
        last = c.last_step()
        problems = []
        code, done, rec = c.recover()
        if code != 0:
            problems.append(f"recover exited {code}: {rec.tail()}")
        redone = False
        state = c.journal_state()
        if state is not None and state.awaiting_confirm:
            redone = True
            again = c.run(*cmd)
            if again.proc.returncode != 0:
                problems.append(f"`labmig {' '.join(cmd)}` again failed: {again.tail()}")
        if kind == "revert":
            verdict = verify_end(c, src, boots, kept=(dst,))
        elif kind == "confirm":
            verdict = verify_end(c, dst, boots, same={src: before})
        else:
            verdict = verify_end(c, dst, boots, gone=(src,))
        how = "killed" if killed else "ended by itself before the kill drawn"
        head = (f"{how} at {u * normal:.2f} of {normal:.2f} s (u={u:.3f}) after '{last}'; recover "
                f"{','.join(_recover_actions(done, c.vm)) or 'did nothing'}"
                + (f"; `{' '.join(cmd[:1] + cmd[2:])}` run again" if redone else ""))
        return _result(case, t0, head, verdict, problems, last, killed, u=u, kill_at=u * normal, normal=normal,
                       recover=done, redone=redone, ready=ready)

    return trial


def two_migrations(c: Campaign, i: int) -> TrialResult:
    """Two migrations of the VM started together (a random stagger under 100 ms, either first)."""
    t0 = time.monotonic()
    rng = trial_rng(c.seed, "two-migrations", i)
    src, dst, boots, before, ready = _start_point(c)
    args = ("migrate", "cold", c.vm, "--from", src, "--to", dst, "--shutdown-timeout", "1s", "--confirm")
    stagger = rng.uniform(0.0, 0.1)
    first = c.start(*args)
    time.sleep(stagger)
    second = c.start(*args)
    for child in (first, second):
        child.wait(300)
    codes = (first.proc.returncode, second.proc.returncode)
    problems = []
    if sorted(codes) != [0, 3]:
        problems.append(f"exit codes {codes}, expected one 0 and one 3: {first.tail(200)} | {second.tail(200)}")
        winner = loser = None
    else:
        winner, loser = (first, second) if codes[0] == 0 else (second, first)
        if f"being migrated by pid {winner.pid} (" not in loser.stderr():
            problems.append(f"the refused one does not name pid {winner.pid}: {loser.tail()}")
    verdict = verify_end(c, dst, boots, same={src: before})
    head = (f"stagger {stagger * 1000:.0f} ms; exits {codes[0]}, {codes[1]}"
            + (f"; the {'second' if loser is second else 'first'} started was refused, naming pid {winner.pid}"
               if winner is not None and loser is not None else ""))
    return _result("two-migrations", t0, head, verdict, problems, None, False, codes=list(codes), ready=ready)


def recover_during(c: Campaign, i: int, link_rate: float = 1 * MiB) -> TrialResult:
    """``labmig recover`` once the migration journaled a drawn step (the link slowed so the copy lasts)."""
    t0 = time.monotonic()
    rng = trial_rng(c.seed, "recover-during", i)
    step = rng.choice(STEPS_TO_RECOVER_DURING)
    src, dst, boots, before, ready = _start_point(c)
    c.remove_copy(dst)
    rate = c.lab.link_rate
    c.lab.shape_link(link_rate)
    problems = []
    try:
        mig = c.start("migrate", "cold", c.vm, "--from", src, "--to", dst, "--shutdown-timeout", "1s", "--confirm")
        reached = c.wait_for_step(mig, (step,))
        code, done, rec = c.recover()
        concurrent = mig.proc.poll() is None
        mig.wait(300)
    finally:
        c.lab.shape_link(rate)
    mine = [d for d in done if d.get("vm") == c.vm]
    skipped = [d for d in mine if str(d.get("reason", "")).startswith(f"skipped: being migrated by pid {mig.pid}")]
    if reached is None:
        problems.append(f"the migration never reached '{step}' (exit {mig.proc.returncode}: {mig.tail()})")
    if code != 0:
        problems.append(f"recover exited {code}: {rec.tail()}")
    if not skipped:
        problems.append(f"recover did not skip the VM: {mine}" + ("" if concurrent else
                        " (the migration may have ended before recover looked)"))
    if mig.proc.returncode != 0:
        problems.append(f"the migration exited {mig.proc.returncode}: {mig.tail()}")
    verdict = verify_end(c, dst, boots, same={src: before})
    head = (f"recover at '{step}' while the migration ran: "
            + (f"skipped ({str(skipped[0]['reason'])[:60]}…)" if skipped else f"saw {mine}"))
    return _result("recover-during", t0, head, verdict, problems, step, False, recover=done, ready=ready)


def link_cut(c: Campaign, i: int, link_rate: float = 512 * 1024) -> TrialResult:
    """Cut the link a drawn 0.5-6 s into the copy of a full disk at ``link_rate`` (about 16 s for 8 MiB)."""
    from ..lab.faults import inject

    t0 = time.monotonic()
    rng = trial_rng(c.seed, "link-cut", i)
    delay = rng.uniform(0.5, 6.0)
    src, dst, boots, before, ready = _start_point(c)
    c.remove_copy(dst)
    rate = c.lab.link_rate
    c.lab.shape_link(link_rate)
    problems: list[str] = []
    to_source = 0.0
    try:
        mig = c.start("migrate", "cold", c.vm, "--from", src, "--to", dst, "--shutdown-timeout", "1s")
        reached = c.wait_for_step(mig, (Step.DISK_COPYING,))
        time.sleep(delay)
        if reached is None or mig.proc.poll() is not None:
            problems.append(f"the migration was not copying when the link was to be cut (exit "
                            f"{mig.proc.returncode}: {mig.tail()})")
        inject(c.lab, "link-cut")
        cut = time.monotonic()
        mig.wait(180)
        to_source = time.monotonic() - cut
    finally:
        inject(c.lab, "link-restore")
        c.lab.shape_link(rate)
    if mig.proc.returncode == 0:
        problems.append("the migration completed although the link was cut")
    if to_source > 60:
        problems.append(f"the migration took {to_source:.0f} s after the cut to end")
    if src not in mig.stdout() + mig.stderr():
        problems.append(f"its output does not name {src}: {mig.tail()}")
    verdict = verify_end(c, src, boots, same={src: before})
    head = f"cut {delay:.1f} s into the copy; the migration ended {to_source:.1f} s later (exit {mig.proc.returncode})"
    return _result("link-cut", t0, head, verdict, problems, None, False, cut_after=delay,
                   ended_after_cut=to_source, said=mig.tail(600), ready=ready)


def disk_full(when: str, shutdown: float = 5.0) -> Callable[[Campaign, int], TrialResult]:
    """A case filling the destination's image directory ``before`` the migration, or ``during`` it.

    ``during``: once the prechecks passed (the shutdown requested, ``shutdown`` s before the
    guest is forced off), a drawn 0-1 s later: the copy starts on a full file system.
    """
    case = f"disk-full-{when}"

    def trial(c: Campaign, i: int) -> TrialResult:
        from ..lab.faults import inject

        t0 = time.monotonic()
        rng = trial_rng(c.seed, case, i)
        delay = rng.uniform(0.0, 1.0)
        src, dst, boots, before, ready = _start_point(c)
        c.remove_copy(dst)
        problems: list[str] = []
        at = "first"
        try:
            if when == "before":
                filled = inject(c.lab, "fill-disk", host=dst)
                mig = c.migrate(src, dst)
            else:
                mig = c.start("migrate", "cold", c.vm, "--from", src, "--to", dst,
                              "--shutdown-timeout", f"{shutdown:g}s")
                if c.wait_for_step(mig, (Step.SHUTDOWN_REQUESTED,)) is None:
                    problems.append(f"the migration never asked the guest to shut down (exit {mig.proc.returncode})")
                time.sleep(delay)
                started = time.monotonic()
                filled = inject(c.lab, "fill-disk", host=dst)
                at = (f"{delay:.1f} s after the shutdown request, in {time.monotonic() - started:.1f} s, "
                      f"the journal at '{c.last_step()}' then")
                mig.wait(300)
        finally:
            inject(c.lab, "unfill-disk", host=dst)
        said = " ".join((mig.stdout() + " " + mig.stderr()).split())
        if mig.proc.returncode == 0:
            problems.append("the migration completed although the destination was full")
        verdict = verify_end(c, src, boots, restarted=None if when == "before" else True, same={src: before})
        why = next((w for w in ("No space left", "free for images", "ENOSPC", "space") if w in said), "?")
        head = f"{dst} filled ({filled['bytes'] // MiB} MiB) {at}; the migration exited {mig.proc.returncode} ('{why}')"
        return _result(case, t0, head, verdict, problems, None, False, said=said[-600:], ready=ready)

    return trial


def round_trip(c: Campaign, moves: int = 10,
               on_move: Callable[[int, TrialResult], None] | None = None) -> list[TrialResult]:
    """Cold there and back, ``moves`` migrations each confirmed; the first (the other host emptied) is full.

    ``on_move(k, result)`` is called after each move (numbered from 1).
    """
    out = []
    ready = c.make_ready()
    c.remove_copy(other(c.home()))
    for k in range(moves):
        c.wait_quiet()
        t0 = time.monotonic()
        src = c.home()
        dst = other(src)
        boots = c.boot() or 0
        before = disk_digest(c.disk(src))
        mig = c.migrate(src, dst, "--json")
        problems = []
        wire = blocks = total = None
        if mig.proc.returncode != 0:
            problems.append(f"the migration failed: {mig.tail()}")
        else:
            try:
                result = json.loads(mig.stdout())
                wire = int(result["bytes_by_phase"]["disk"])
                disk = result["extra"]["disks"][0]
                blocks, total = int(disk["blocks_sent"]), int(disk["blocks_total"])
            except (ValueError, KeyError, IndexError) as exc:
                problems.append(f"cannot read the result: {exc}")
        moved = mig.seconds
        conf = c.run("confirm", c.vm)
        if conf.proc.returncode != 0:
            problems.append(f"confirm failed: {conf.tail()}")
        verdict = verify_end(c, dst, boots, same={src: before})
        head = (f"move {k + 1}: {src}->{dst} {'?' if wire is None else f'{wire:,}'} B on the wire, "
                f"{blocks}/{total} blocks sent, {moved:.1f} s; booted the copy (boot {verdict.boot})")
        out.append(_result("round-trip", t0, head, verdict, problems, f"{src}->{dst}", False, wire=wire,
                           blocks_sent=blocks, blocks_total=total, migrate_seconds=moved,
                           ready=ready if k == 0 else ""))
        if on_move is not None:
            on_move(k + 1, out[-1])
    return out


CASES: dict[str, Case] = {case.name: case for case in (
    Case("random-kill", "SIGKILL `labmig migrate cold` at a random time, then `labmig recover`", random_kill),
    Case("confirm-kill", "SIGKILL `labmig confirm` at a random time, then `labmig recover`", finish_kill("confirm")),
    Case("confirm-delete-kill", "SIGKILL `labmig confirm --delete-source-disks` at a random time, then recover",
         finish_kill("confirm-delete")),
    Case("revert-kill", "SIGKILL `labmig revert` at a random time, then `labmig recover`", finish_kill("revert")),
    Case("two-migrations", "two `labmig migrate cold` of the VM started together", two_migrations),
    Case("recover-during", "`labmig recover` while a migration runs", recover_during),
    Case("link-cut", "the link cut during the disk copy", link_cut),
    Case("disk-full-before", "the destination's image directory full before the migration", disk_full("before")),
    Case("disk-full-during", "the destination's image directory filled after the prechecks, before the copy",
         disk_full("during")),
)}
