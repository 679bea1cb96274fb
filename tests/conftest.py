"""Shared pytest set-up: which core the run uses is printed in the header."""
import os


def pytest_report_header(config):
    from labmig import core

    forced = " (LABMIG_PUREPYTHON=1)" if os.environ.get("LABMIG_PUREPYTHON") else ""
    return f"labmig core: {core.IMPLEMENTATION}{forced}"
