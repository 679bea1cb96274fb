"""``python -m labmig`` is the ``labmig`` command."""
import sys

from .cli import main

sys.exit(main())
