"""Run the destination helper through ssh and talk to it; count every byte both ways.

    SshTarget   how to reach a host's sshd (address, user, port, key, known_hosts) and
                which Python runs the helper there; ``argv()`` builds the ssh argv list
    SshAgent    a running helper: ``call(op, payload, **args)`` → (reply, payload);
                ``bytes_sent`` / ``bytes_received`` are what crossed the ssh channel
                (payload of the encrypted stream, both directions); a context manager

Nothing waits forever on a host that went away. ssh sends keepalives
(``ServerAliveInterval`` 5 s, 3 missed: a cut link ends the session in about 15–20 s,
and the pipes close), and every call has a deadline (``call_timeout``, longer for the
ops that read a whole image, ``SLOW_OPS``): a helper that stops answering while the
link is up is stopped and the call fails with an error naming the op and the host.

ssh hands its remote command to the remote shell as one string, so the command is
built only from the host's configuration (each word quoted); names coming from a
VM definition or a user never appear in it — they travel inside frames.
"""
from __future__ import annotations

import logging
import os
import select
import shlex
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from ..errors import CopyError, LabmigError
from .protocol import ProtocolError, read_frame, write_frame

log = logging.getLogger(__name__)


class AgentError(CopyError):
    """The destination helper refused a request or failed."""


# Deadlines of the calls that read or sync a whole image (a 64 GiB disk at 100 MB/s
# takes 11 minutes to hash); every other call answers in seconds.
SLOW_OPS = {"verify": 3600.0, "finish": 900.0}


class _CallTimeout(Exception):
    pass


class _Pipes:
    """The helper's stdin and stdout as a stream whose reads and writes end at a deadline.

    Both fds are non-blocking; each step waits with select() for at most what is left
    of the current call's time, so a stuck peer cannot hold a call past its deadline.
    """

    def __init__(self, write_fd: int, read_fd: int) -> None:
        self.write_fd, self.read_fd = write_fd, read_fd
        os.set_blocking(write_fd, False)
        os.set_blocking(read_fd, False)
        self.deadline = float("inf")

    def _wait(self, fd: int, writing: bool) -> None:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise _CallTimeout
        ready = select.select([], [fd], [], left)[1] if writing else select.select([fd], [], [], left)[0]
        if not ready:
            raise _CallTimeout

    def write(self, data: bytes | memoryview) -> int:
        view = memoryview(data).cast("B")
        while view:
            self._wait(self.write_fd, writing=True)
            try:
                n = os.write(self.write_fd, view)
            except BlockingIOError:
                continue
            view = view[n:]
        return len(data)

    def flush(self) -> None:
        pass

    def read(self, n: int) -> bytes:
        while True:
            self._wait(self.read_fd, writing=False)
            try:
                return os.read(self.read_fd, n)
            except BlockingIOError:
                continue


@dataclass
class SshTarget:
    """An sshd to run the helper through. ``address=None`` runs it locally (tests, same host)."""

    address: str | None
    user: str = "root"
    port: int = 22
    identity: str | None = None
    known_hosts: str | None = None
    python: str = sys.executable
    options: tuple[str, ...] = ()
    connect_timeout: int = 10
    keepalive_interval: int = 5            # ssh ServerAliveInterval (seconds); 0: none
    keepalive_count: int = 3               # ssh ServerAliveCountMax: missed keepalives before it gives up
    config: str | None = None              # an ssh_config file (ssh -F)
    via: tuple[str, ...] = ()              # argv prefix running ssh elsewhere (e.g. inside a namespace)

    def helper_argv(self, image_dirs: list[str]) -> list[str]:
        argv = [self.python, "-m", "labmig.remote.agent"]
        for d in image_dirs:
            argv += ["--image-dir", str(d)]
        return argv

    def argv(self, remote_argv: list[str]) -> list[str]:
        """The local argv that runs ``remote_argv`` on the target (quoted for its shell)."""
        if self.address is None:
            return list(self.via) + list(remote_argv)
        argv = list(self.via) + ["ssh"]
        if self.config:
            argv += ["-F", self.config]
        argv += ["-T", "-x", "-o", "BatchMode=yes", "-o", "Compression=no",
                "-o", f"ConnectTimeout={int(self.connect_timeout)}", "-p", str(int(self.port))]
        if self.keepalive_interval > 0:
            argv += ["-o", f"ServerAliveInterval={int(self.keepalive_interval)}",
                     "-o", f"ServerAliveCountMax={int(self.keepalive_count)}"]
        if self.identity:
            argv += ["-i", self.identity, "-o", "IdentitiesOnly=yes"]
        if self.known_hosts:
            argv += ["-o", f"UserKnownHostsFile={self.known_hosts}", "-o", "StrictHostKeyChecking=yes"]
        argv += list(self.options)
        argv += ["-l", self.user, "--", self.address]
        argv.append(" ".join(shlex.quote(word) for word in remote_argv))
        return argv


@dataclass
class SshAgent:
    """A helper process on the far side of ssh, spoken to in frames."""

    target: SshTarget
    image_dirs: list[str]
    bytes_sent: int = 0
    bytes_received: int = 0
    calls: int = 0
    call_timeout: float = 120.0            # seconds a call may take (SLOW_OPS take longer)
    info: dict[str, Any] = field(default_factory=dict)
    _proc: subprocess.Popen | None = field(default=None, repr=False)
    _pipes: _Pipes | None = field(default=None, repr=False)
    _stderr: list[bytes] = field(default_factory=list, repr=False)

    def start(self) -> "SshAgent":
        argv = self.target.argv(self.target.helper_argv(self.image_dirs))
        log.debug("starting helper: %s", argv)
        try:
            self._proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                          stderr=subprocess.PIPE, bufsize=0)
        except OSError as exc:
            raise AgentError(f"cannot run {argv[0]}: {exc}", "install openssh-client") from exc
        assert self._proc.stdin is not None and self._proc.stdout is not None
        self._pipes = _Pipes(self._proc.stdin.fileno(), self._proc.stdout.fileno())
        threading.Thread(target=self._drain_stderr, daemon=True).start()
        try:
            self.info, _ = self.call("hello")
        except LabmigError as exc:
            self.close()
            where = self.target.address or "this host"
            raise AgentError(f"the disk helper on {where} did not start: {exc.message}",
                             f"check ssh to {self.target.user}@{where}:{self.target.port} and that labmig "
                             f"is installed for {self.target.python}") from exc
        return self

    def _drain_stderr(self) -> None:
        assert self._proc is not None and self._proc.stderr is not None
        for line in iter(self._proc.stderr.readline, b""):
            self._stderr.append(line)
            del self._stderr[:-50]

    def stderr_text(self) -> str:
        return b"".join(self._stderr).decode(errors="replace").strip()

    def call(self, op: str, payload: bytes | memoryview = b"", **args: Any) -> tuple[dict[str, Any], bytes]:
        if self._proc is None or self._pipes is None:
            raise AgentError("the disk helper is not running", "start it first")
        seconds = max(self.call_timeout, SLOW_OPS.get(op, 0.0))
        self._pipes.deadline = time.monotonic() + seconds
        try:
            self.bytes_sent += write_frame(self._pipes, {"op": op, **args}, payload)
            frame = read_frame(self._pipes)
        except _CallTimeout:
            where = self.target.address or "this host"
            self._stop()
            raise AgentError(f"the disk helper on {where} did not answer '{op}' within {seconds:.0f} s",
                             f"the link to {where} may be down or its storage stuck; the helper was stopped") from None
        except (BrokenPipeError, ProtocolError) as exc:
            err = self.stderr_text()
            raise AgentError(f"the disk helper stopped during '{op}'" + (f": {err.splitlines()[-1]}" if err else ""),
                             "see the error above; check ssh and the destination's image directory") from exc
        if frame is None:
            err = self.stderr_text()
            raise AgentError(f"the disk helper closed the connection during '{op}'" + (f": {err}" if err else ""),
                             "check ssh and the destination host")
        reply, data, nbytes = frame
        self.bytes_received += nbytes
        self.calls += 1
        if not reply.get("ok"):
            raise AgentError(reply.get("error", f"'{op}' failed"), reply.get("hint"))
        return reply, data

    def _stop(self) -> None:
        """Kill the helper (and the ssh under it): after a missed deadline its state is unknown."""
        proc, self._proc, self._pipes = self._proc, None, None
        if proc is not None:
            proc.kill()
            proc.wait()

    def close(self) -> None:
        proc, pipes = self._proc, self._pipes
        self._proc, self._pipes = None, None
        if proc is None:
            return
        try:
            if proc.poll() is None and pipes is not None:
                pipes.deadline = time.monotonic() + 10
                write_frame(pipes, {"op": "bye"})
                assert proc.stdin is not None
                proc.stdin.close()
            proc.wait(timeout=10)
        except (OSError, subprocess.TimeoutExpired, ValueError, _CallTimeout):
            proc.kill()
            proc.wait()

    def __enter__(self) -> "SshAgent":
        return self.start() if self._proc is None else self

    def __exit__(self, *exc: object) -> None:
        self.close()
