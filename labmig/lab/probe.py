"""A network client of the guest that measures the interruption a user would see.

    Probe          start() a pinger in the lab's client namespace, stop() -> ProbeReport
    ProbeReport    sent / answered counts, the longest gap between answers, every gap
    main()         the pinger itself (``python -m labmig.lab.probe``), run by Probe

The pinger sends ``PING <seq> <time>`` over UDP every ``interval`` seconds and
records when each ``PONG`` comes back. The longest time without an answer is the
interruption a client saw (during a live migration: the downtime plus the time
the network needs to learn the guest's new port; during a cold one: shutdown and boot).
Times are wall-clock (``time.time()``) so they line up with migration events.
"""
from __future__ import annotations

import argparse
import json
import os
import select
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import LabError
from .layout import GUEST_UDP_PORT, LabLayout


@dataclass
class ProbeReport:
    target: str
    interval: float
    started: float
    stopped: float
    sent: int
    answered: int
    max_gap: float                      # longest time between two answers (or start/stop and an answer)
    gaps: list[tuple[float, float]] = field(default_factory=list)  # (from, to) wall times of gaps > 3 intervals

    @property
    def lost(self) -> int:
        return self.sent - self.answered

    def to_dict(self) -> dict:
        return {**self.__dict__, "lost": self.lost}


class Probe:
    """Pings a guest from the client namespace until stopped."""

    def __init__(self, layout: LabLayout, target: str, interval: float = 0.02) -> None:
        self.layout = layout
        self.target = target
        self.interval = interval
        self.out = layout.run_dir / f"probe-{target}-{os.getpid()}-{time.monotonic_ns()}.json"
        self.proc: subprocess.Popen | None = None

    def start(self) -> "Probe":
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            ["nsenter", f"--net=/run/netns/{self.layout.client_netns}", "--", sys.executable, "-m", "labmig.lab.probe",
             "--target", self.target, "--interval", str(self.interval), "--out", str(self.out)],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        # The pinger prints one line once its socket is ready.
        assert self.proc.stdout is not None  # stdout=PIPE
        ready, _, _ = select.select([self.proc.stdout], [], [], 10)
        if not ready or not self.proc.stdout.readline():
            self.proc.kill()
            raise LabError("the client probe did not start", hint=(self.proc.stderr.read() if self.proc.stderr else "")[-300:])
        return self

    def stop(self, timeout: float = 10.0) -> ProbeReport:
        assert self.proc is not None, "start() first"
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout)
        data = json.loads(self.out.read_text())
        self.out.unlink(missing_ok=True)
        data["gaps"] = [tuple(g) for g in data["gaps"]]
        return ProbeReport(**data)

    def __enter__(self) -> "Probe":
        return self.start() if self.proc is None else self

    def __exit__(self, *exc: object) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--target", required=True)
    ap.add_argument("--port", type=int, default=GUEST_UDP_PORT)
    ap.add_argument("--interval", type=float, default=0.02)
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)

    stop = False

    def on_term(*_):
        nonlocal stop
        stop = True
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)

    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setblocking(False)
    started = time.time()
    last_answer = started
    max_gap = 0.0
    gaps: list[tuple[float, float]] = []
    sent = answered = 0
    seen: set[int] = set()
    next_send = time.monotonic()
    parent = os.getppid()
    print("ready", flush=True)
    while not stop:
        if os.getppid() != parent:  # whoever started the probe is gone: nobody will stop it
            break
        now_m = time.monotonic()
        if now_m >= next_send:
            try:
                sock.sendto(f"PING {sent} {time.time():.6f}".encode(), (args.target, args.port))
            except OSError:
                pass  # no route while the network re-learns: counts as unanswered
            sent += 1
            next_send += args.interval
            if next_send < now_m:
                next_send = now_m + args.interval
        try:
            r, _, _ = select.select([sock], [], [], max(0.0, next_send - time.monotonic()))
        except InterruptedError:
            continue
        if not r:
            continue
        while True:
            try:
                data = sock.recv(256)
            except (BlockingIOError, InterruptedError):
                break
            parts = data.split()
            if len(parts) < 2 or parts[0] != b"PONG" or not parts[1].isdigit():
                continue
            seq = int(parts[1])
            if seq in seen:
                continue
            seen.add(seq)
            answered += 1
            t = time.time()
            gap = t - last_answer
            if gap > max_gap:
                max_gap = gap
            if gap > 3 * args.interval:
                gaps.append((last_answer, t))
            last_answer = t
    stopped = time.time()
    if stopped - last_answer > max_gap:
        max_gap = stopped - last_answer
    report = {"target": args.target, "interval": args.interval, "started": started, "stopped": stopped,
              "sent": sent, "answered": answered, "max_gap": max_gap, "gaps": gaps}
    tmp = Path(args.out + ".tmp")
    tmp.write_text(json.dumps(report))
    os.replace(tmp, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
