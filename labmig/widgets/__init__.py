"""JupyterLab widgets for migration labs: a controller that does the work, views that show it.

    params       MigrationParams, KINDS: what one run is, as the panel edits it
    controller   Run, MigrationController (no ipywidgets; testable anywhere)
    backends     simulator / local lab / hosts adapters and the BACKENDS registry
    views        MigrationPanel, ComparisonView (ipywidgets 8)
    plots        matplotlib figures: timeline, comparison bars, sweeps
    tables       HTML tables: one result beside its prediction, the live-vs-cold table

In a notebook::

    from labmig.widgets import MigrationPanel, ComparisonView
    panel = MigrationPanel()          # backend "auto": the local lab if up, else the simulator
    panel                             # Migrate / Abort in the browser
    ComparisonView(panel.controller)  # every finished run, live vs cold
"""
from __future__ import annotations

from .controller import MigrationController, Run
from .params import MigrationParams

__all__ = ["MigrationController", "MigrationParams", "Run", "MigrationPanel", "ComparisonView"]


def __getattr__(name: str):
    # The views need ipywidgets (the `ui` extra); the controller does not.
    if name in ("MigrationPanel", "ComparisonView"):
        from . import views

        return getattr(views, name)
    raise AttributeError(name)
