"""The real local lab for the lab-marked tests: brought up once per session (idempotent).

`make test` cleans and brings up its own lab (name in $LABMIG_LAB) before pytest;
run alone (`pytest tests/lab`), the fixture brings it up itself.
"""
import os

import pytest


@pytest.fixture(scope="session")
def lab():
    if os.geteuid() != 0:
        pytest.fail("the lab tests need root (namespaces, libvirtd); run `make test` as root")
    from labmig.lab import LocalLab

    lab = LocalLab()
    lab.up()
    return lab
