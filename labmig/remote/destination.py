"""``SshDestination``: the block-copy destination interface, served by a helper over ssh.

    SshDestination(agent, path)   implements :class:`labmig.blockcopy.Destination`; each
                                  method is one request/reply with the helper, but
                                  extents (write, zero), which are gathered into one
                                  ``extents`` request of up to BATCH_BYTES (sent before
                                  any other request): one round trip and a few bytes
                                  of header per batch instead of per extent
    copy_disk(src, agent, path)   :func:`labmig.blockcopy.delta_copy` to it, returning the
                                  copier's stats plus the bytes the ssh channel really
                                  carried (``wire_sent`` / ``wire_received``); refused
                                  before anything is written when ``path`` is ``src``
                                  itself (:func:`labmig.remote.samefile.same_file`)

The copier's own ``bytes_on_wire`` is its estimate of what a wire would carry; the
figures here are counted on the pipes to and from ssh, frames and all.
"""
from __future__ import annotations

import logging
from typing import Any, Callable

from ..blockcopy import delta_copy
from ..errors import InvalidInput
from ..progress import Progress
from .protocol import Extent, pack_extents
from .samefile import LocalView, same_file

log = logging.getLogger(__name__)

BATCH_BYTES = 8 << 20     # extent data gathered before it is sent
BATCH_EXTENTS = 4096      # ... or this many extents (zero ones carry no data)


class SshDestination:
    """One image on the helper's host."""

    def __init__(self, agent: Any, path: str) -> None:
        self.agent = agent
        self.path = path
        where = agent.target.address or "local helper"
        self.name = f"{where}:{path}"
        self.unit = 1                        # the block size, once digests were asked for
        self.extents: list[Extent] = []      # gathered, not sent yet
        self.data: list[bytes] = []
        self.data_bytes = 0

    def stat(self) -> dict[str, Any]:
        self.flush()
        return self.agent.call("stat", path=self.path)[0]

    def open(self, size: int) -> int:
        self.flush()
        return int(self.agent.call("open", path=self.path, size=int(size))[0]["old_size"])

    def digests(self, offset: int, length: int, block_size: int, seed: int) -> bytes:
        self.flush()
        self.unit = int(block_size)
        return self.agent.call("digests", path=self.path, offset=int(offset), length=int(length),
                               block_size=int(block_size), seed=int(seed))[1]

    def write(self, offset: int, data: bytes | memoryview) -> None:
        self.extents.append((int(offset), len(data), False))
        self.data.append(bytes(data))     # the sender reuses its buffer
        self.data_bytes += len(data)
        if self.data_bytes >= BATCH_BYTES or len(self.extents) >= BATCH_EXTENTS:
            self.flush()

    def zero(self, offset: int, length: int) -> None:
        self.extents.append((int(offset), int(length), True))
        if len(self.extents) >= BATCH_EXTENTS:
            self.flush()

    def flush(self) -> None:
        """Send the gathered extents as one ``extents`` request."""
        if not self.extents:
            return
        unit = self.unit if all(off % self.unit == 0 for off, _, _ in self.extents) else 1
        table = pack_extents(self.extents, unit)
        payload = b"".join([table, *self.data])
        self.extents, self.data, self.data_bytes = [], [], 0
        self.agent.call("extents", payload, path=self.path, unit=unit, table=len(table))

    def written_digest(self, block_size: int, seed: int) -> bytes:
        self.flush()
        return self.agent.call("written_digest", path=self.path, block_size=int(block_size), seed=int(seed))[1]

    def verify(self, algo: str) -> str:
        self.flush()
        return str(self.agent.call("verify", path=self.path, algo=algo)[0]["digest"])

    def finish(self) -> None:
        self.flush()
        self.agent.call("finish", path=self.path)

    def close(self) -> None:
        self.extents, self.data, self.data_bytes = [], [], 0   # a copy that failed sends nothing more
        self.agent.call("close", path=self.path)


def copy_disk(src: str, agent: Any, path: str, block_size: int = 64 * 1024, verify: str = "full",
              on_progress: Callable[[int, int], None] | None = None,
              show_progress: bool = False) -> dict[str, Any]:
    sent0, recv0 = agent.bytes_sent, agent.bytes_received
    dest = SshDestination(agent, path)
    # Copying a file onto itself "succeeds" (every block matches) and leaves one copy where
    # the caller believes there are two; on shared storage the two paths can differ.
    how = same_file(agent, path, LocalView(), src)
    if how is not None:
        raise InvalidInput(f"source {src} and destination {dest.name} are the same file ({how})",
                           "the destination sees the source's storage: give a path on other storage, "
                           "or do not copy this disk")
    with Progress(1, f"copy {path.rsplit('/', 1)[-1]}", enabled=None if show_progress else False) as bar:
        def progress(done: int, total: int) -> None:
            bar.total = max(float(total), 1.0)
            bar.update(done)
            if on_progress:
                on_progress(done, total)

        try:
            stats = delta_copy(src, dest, block_size=block_size, verify=verify, progress=progress)
        finally:
            try:
                dest.close()
            except Exception:  # the helper may be gone already; the copy's own error matters more
                log.debug("closing %s failed", dest.name, exc_info=True)
    out = stats.to_dict()
    out["wire_sent"] = agent.bytes_sent - sent0
    out["wire_received"] = agent.bytes_received - recv0
    return out
