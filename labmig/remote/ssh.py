"""Run the destination helper through ssh and talk to it; count every byte both ways.

    SshTarget   how to reach a host's sshd (address, user, port, key, known_hosts) and
                which Python runs the helper there; ``argv()`` builds the ssh argv list
    SshAgent    a running helper: ``call(op, payload, **args)`` → (reply, payload);
                ``bytes_sent`` / ``bytes_received`` are what crossed the ssh channel
                (payload of the encrypted stream, both directions); a context manager

ssh hands its remote command to the remote shell as one string, so the command is
built only from the host's configuration (each word quoted); names coming from a
VM definition or a user never appear in it — they travel inside frames.
"""
from __future__ import annotations

import logging
import shlex
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from typing import Any

from ..errors import CopyError, LabmigError
from .protocol import ProtocolError, read_frame, write_frame

log = logging.getLogger(__name__)


class AgentError(CopyError):
    """The destination helper refused a request or failed."""


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
    info: dict[str, Any] = field(default_factory=dict)
    _proc: subprocess.Popen | None = field(default=None, repr=False)
    _stderr: list[bytes] = field(default_factory=list, repr=False)

    def start(self) -> "SshAgent":
        argv = self.target.argv(self.target.helper_argv(self.image_dirs))
        log.debug("starting helper: %s", argv)
        try:
            self._proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                          stderr=subprocess.PIPE, bufsize=0)
        except OSError as exc:
            raise AgentError(f"cannot run {argv[0]}: {exc}", "install openssh-client") from exc
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
        if self._proc is None or self._proc.stdin is None or self._proc.stdout is None:
            raise AgentError("the disk helper is not running", "start it first")
        try:
            self.bytes_sent += write_frame(self._proc.stdin, {"op": op, **args}, payload)
            frame = read_frame(self._proc.stdout)
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

    def close(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        try:
            if proc.poll() is None and proc.stdin is not None:
                write_frame(proc.stdin, {"op": "bye"})
                proc.stdin.close()
            proc.wait(timeout=10)
        except (OSError, subprocess.TimeoutExpired, ValueError):
            proc.kill()
            proc.wait()

    def __enter__(self) -> "SshAgent":
        return self.start() if self._proc is None else self

    def __exit__(self, *exc: object) -> None:
        self.close()
