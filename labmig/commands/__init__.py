"""Subcommands of the ``labmig`` command line, one module each (see :mod:`labmig.cli`)."""
