"""Core tests: which binary they run against, checked before any test runs.

``scripts/test-core-builds.sh`` runs this suite once per CPU target, each against
its own build, with ``LABMIG_EXPECT_CORE=TARGET``; a run that would load another
binary (a stale object, the source tree's build) stops at once instead of
testing the wrong thing.
"""
import os

import pytest


def pytest_report_header(config):
    from labmig import core

    if core.IMPLEMENTATION != "compiled":
        return None
    return (f"labmig compiled core: built for {core._impl.BUILD_TARGET} "
            f"({' '.join(core._impl.BUILD_FEATURES) or 'no optional instruction sets'}), {core._impl.__file__}")


def pytest_configure(config):
    expected = os.environ.get("LABMIG_EXPECT_CORE")
    if not expected:
        return
    from labmig import core

    if core.IMPLEMENTATION != "compiled":
        raise pytest.UsageError(f"LABMIG_EXPECT_CORE={expected} but the compiled core did not load "
                                f"(implementation: {core.IMPLEMENTATION})")
    built_for = core._impl.BUILD_TARGET
    if built_for != expected:
        raise pytest.UsageError(f"LABMIG_EXPECT_CORE={expected} but {core._impl.__file__} was built for "
                                f"{built_for}: rebuild it (scripts/test-core-builds.sh) before testing it")
