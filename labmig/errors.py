"""One exception root for labmig, and the families beneath it.

Every error a user can meet derives from :class:`LabmigError`. Each carries a
``hint``: what to do about it. Errors caused by something lower down (an
``OSError``, a ``libvirt.libvirtError``) are raised ``from`` that cause so the
traceback keeps both.

    LabmigError
    ├── InvalidInput        bad argument, unit, path or option (nothing was changed)
    ├── CopyError           the disk copy could not be done
    │   ├── SourceChanged   the source was written to while it was copied
    │   └── VerifyFailed    the destination does not match the source after copying
    ├── LabError            the local lab could not be set up, used or torn down
    ├── PrecheckFailed      a migration pre-check said no (nothing was changed)
    │   └── VMBusy          another labmig process holds the VM's lock (labmig.vmlock)
    └── MigrationFailed     a migration failed; ``rolled_back`` says where the VM is
"""
from __future__ import annotations


class LabmigError(Exception):
    """Root of every labmig error. ``hint`` says what the user can do."""

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        if self.hint:
            return f"{self.message}\n  hint: {self.hint}"
        return self.message


class InvalidInput(LabmigError, ValueError):
    """A user-supplied value is wrong; nothing was changed."""

    exit_code = 2


class CopyError(LabmigError):
    """A disk copy could not be completed."""


class SourceChanged(CopyError):
    """The source changed while it was being copied."""


class VerifyFailed(CopyError):
    """The destination does not match the source after the copy."""


class LabError(LabmigError):
    """The local two-host lab could not be brought up, used or torn down."""


class PrecheckFailed(LabmigError):
    """A migration pre-check failed before anything was changed."""

    exit_code = 3


class MigrationFailed(LabmigError):
    """A migration failed. ``rolled_back`` is True when the VM runs on the source again."""

    def __init__(self, message: str, hint: str | None = None, rolled_back: bool = False) -> None:
        super().__init__(message, hint)
        self.rolled_back = rolled_back
