"""Stopping labmig: a libvirt call given up on, and SIGTERM / SIGHUP during a live migration.

No lab needed: these check the mechanisms; tests/live/test_live_lab.py sends the signals to a
real `labmig migrate live` and checks that the VM stays on its source.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from labmig.commands.migrate import Terminated, stop_signals_roll_back
from labmig.watchdog import HostUnresponsive, Watchdog

STUCK_CALL = """
import time
from labmig.watchdog import HostUnresponsive, Watchdog
try:
    Watchdog(0.2).call("a call that never answers", time.sleep, 3600)
except HostUnresponsive as exc:
    print("gave up:", exc.message, flush=True)
"""


def test_a_call_given_up_on_does_not_keep_the_process_alive():
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", STUCK_CALL], capture_output=True, text=True, timeout=60)
    took = time.monotonic() - t0
    assert proc.stdout.strip() == "gave up: a call that never answers did not answer within 0.2 s", proc.stderr
    assert proc.returncode == 0
    assert took < 20, f"the process took {took:.1f} s to exit after giving up on the call"


def test_watchdog_hands_back_results_and_errors():
    assert Watchdog(5).call("adding", lambda a, b=0: a + b, 1, b=2) == 3
    with pytest.raises(ZeroDivisionError):
        Watchdog(5).call("dividing", lambda: 1 / 0)
    with pytest.raises(HostUnresponsive, match="sleeping did not answer within 0.1 s"):
        Watchdog(5).call("sleeping", time.sleep, 2, timeout=0.1)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_stop_signal_raises_once_then_is_ignored_until_the_block_ends(signum):
    before = signal.getsignal(signum)
    with pytest.raises(Terminated) as info:
        with stop_signals_roll_back():
            os.kill(os.getpid(), signum)
            time.sleep(5)      # the signal handler raises in here
    assert info.value.signum == signum and str(info.value) == signal.Signals(signum).name
    assert isinstance(info.value, KeyboardInterrupt)   # LiveMigration.run handles it as Ctrl-C
    assert signal.getsignal(signum) is before

    with stop_signals_roll_back():
        with pytest.raises(Terminated):
            os.kill(os.getpid(), signum)
            time.sleep(5)
        os.kill(os.getpid(), signum)   # a second one while rolling back: ignored
        time.sleep(0.1)
    assert signal.getsignal(signum) is before


def test_a_stop_signal_ignored_by_the_caller_stays_ignored():
    before = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        with stop_signals_roll_back():
            assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
            os.kill(os.getpid(), signal.SIGHUP)
            time.sleep(0.1)
    finally:
        signal.signal(signal.SIGHUP, before)
