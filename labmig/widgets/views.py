"""The ipywidgets views: thin over :class:`~labmig.widgets.controller.MigrationController`.

    MigrationPanel   the form (backend, VM, hosts, kind, strategy and its options, guest and link
                     figures), Migrate / Abort, then while it runs: progress, the phase in words,
                     the timeline plot; afterwards the result table beside the simulator's prediction
    ComparisonView   accumulates the controller's finished runs: the live-vs-cold table with
                     measured numbers, the list of runs, bar plots across runs

Views only copy form values into the controller and draw what its observers report. Plots are
PNG images (matplotlib without pyplot), so the run's thread may redraw them while the kernel
stays free for other cells.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Any

import ipywidgets as w

from ..errors import LabmigError
from ..units import parse_size
from . import plots, tables
from .backends import BACKENDS, resolve_backend
from .controller import MigrationController, Run
from .params import KINDS
from .simplan import option_specs, strategy_choices

log = logging.getLogger(__name__)

_REDRAW_EVERY = 0.3  # seconds between timeline redraws while a run goes on


def _text(description: str, value: str, width: str = "210px") -> w.Text:
    return w.Text(value=value, description=description, style={"description_width": "110px"},
                  layout=w.Layout(width=width))


class MigrationPanel:
    """The migration panel. Show it as the last line of a cell; ``controller`` does the work."""

    def __init__(self, controller: MigrationController | None = None, **params: Any) -> None:
        note = ""
        if params.get("backend", "auto") == "auto":
            params["backend"], note = resolve_backend()
        if params["backend"] == "local lab" and controller is None:
            from .labglue import LAB_DEFAULTS

            params = {**LAB_DEFAULTS, **params}
        self.controller = controller or MigrationController(**params)
        p = self.controller.params
        self._lock = threading.Lock()
        self._last_draw = 0.0

        self.backend = w.Dropdown(options=list(BACKENDS), value=p.backend, description="backend",
                                  style={"description_width": "95px"}, layout=w.Layout(width="290px"))
        self.status = w.HTML(value=note)
        self.vm = _text("VM", p.vm)
        self.source = _text("source", p.source)
        self.destination = _text("destination", p.destination)
        self.kind = w.ToggleButtons(options=list(KINDS), value=p.kind,
                                    style={"button_width": "70px"}, layout=w.Layout(width="200px"))
        self.strategy = w.Dropdown(options=strategy_choices(p.kind) or [p.strategy], description="strategy",
                                   style={"description_width": "95px"}, layout=w.Layout(width="290px"))
        if p.strategy in self.strategy.options:
            self.strategy.value = p.strategy
        self.memory = _text("memory", p.memory)
        self.working_set = _text("working set", p.working_set)
        self.dirty_rate = _text("dirty rate", p.dirty_rate)
        self.link_rate = _text("link rate", p.link_rate)
        self.max_bandwidth = _text("max bandwidth", p.max_bandwidth)
        self.max_bandwidth.placeholder = "no cap"
        self.downtime_limit = _text("max downtime", p.downtime_limit)
        self.disk = _text("disk", p.disk)
        self.shared_storage = w.Checkbox(value=p.shared_storage, description="shared storage", indent=False)
        self.options_box = w.Accordion()
        self.migrate_button = w.Button(description="Migrate", button_style="primary", icon="play")
        self.abort_button = w.Button(description="Abort", button_style="danger", icon="stop", disabled=True)
        self.progress = w.FloatProgress(value=0.0, min=0.0, max=1.0, description="progress",
                                        style={"description_width": "95px"}, layout=w.Layout(width="460px"))
        self.phase = w.HTML(value="<i>ready</i>")
        self.prediction = w.HTML()
        self.timeline = w.Image(format="png", layout=w.Layout(max_width="680px"))
        self.result = w.HTML()
        self._option_widgets: dict[str, w.Widget] = {}
        self._option_defaults: dict[str, Any] = {}
        self._build_options()

        self.kind.observe(self._on_kind, names="value")
        self.strategy.observe(lambda _: self._build_options(), names="value")
        self.backend.observe(self._on_backend, names="value")
        self.migrate_button.on_click(lambda _: self.migrate())
        self.abort_button.on_click(lambda _: self.controller.abort())
        self.controller.observe(self._on_run)

        form = w.VBox([
            w.HBox([self.backend, self.status]),
            w.HBox([self.vm, self.source, self.destination]),
            w.HBox([w.Label("kind", layout=w.Layout(width="95px", justify_content="flex-end",
                                                    margin="0 8px 0 0")), self.kind, self.strategy]),
            w.HBox([self.memory, self.working_set, self.dirty_rate]),
            w.HBox([self.link_rate, self.max_bandwidth, self.downtime_limit]),
            w.HBox([self.disk, self.shared_storage]),
            self.options_box,
            w.HBox([self.migrate_button, self.abort_button]),
        ])
        self.widget = w.VBox([form, self.progress, self.phase, self.timeline, self.result, self.prediction])
        self.widget.add_class("labmig-panel")

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)

    # -- form -> controller ------------------------------------------------------------------
    def read_form(self) -> None:
        """Copy what the student typed into the controller's parameters."""
        # Only what the student changed: the strategy's defaults stay its own.
        options = {name: box.value for name, box in self._option_widgets.items()
                   if box.value != self._option_defaults.get(name)}
        self.controller.set(
            backend=self.backend.value, kind=self.kind.value, strategy=self.strategy.value,
            vm=self.vm.value.strip(), source=self.source.value.strip(),
            destination=self.destination.value.strip(), memory=self.memory.value,
            working_set=self.working_set.value, dirty_rate=self.dirty_rate.value,
            link_rate=self.link_rate.value, max_bandwidth=self.max_bandwidth.value,
            downtime_limit=self.downtime_limit.value,
            disk=self.disk.value, shared_storage=self.shared_storage.value, options=options,
        )

    def migrate(self) -> Run | None:
        """What the Migrate button does: start a run, or show why it cannot start."""
        try:
            self.read_form()
            return self.controller.start()
        except LabmigError as exc:
            self.phase.value = f"<b style='color:#c44e52'>cannot start:</b> {_esc(str(exc))}"
            return None

    def _on_kind(self, change: dict) -> None:
        choices = strategy_choices(change["new"]) or [self.strategy.value]
        self.strategy.options = choices
        self.strategy.value = choices[0]
        self._build_options()

    def _on_backend(self, change: dict) -> None:
        ok, why = BACKENDS[change["new"]]().available()
        colour = "#55a868" if ok else "#c44e52"
        self.status.value = f"<span style='color:{colour}'>{_esc(why)}</span>"

    def _build_options(self) -> None:
        """One field per option of the chosen strategy, from its Options dataclass."""
        widgets, self._option_defaults = {}, {}
        for spec in option_specs(self.strategy.value):
            if spec.unit == "bool":
                box = w.Checkbox(value=bool(spec.default), description=spec.name, indent=False)
            elif spec.choices:
                box = w.Dropdown(options=list(spec.choices), value=spec.default, description=spec.name,
                                 style={"description_width": "190px"}, layout=w.Layout(width="400px"))
            else:
                box = w.Text(value=str(spec.default), description=spec.name,
                             style={"description_width": "190px"}, layout=w.Layout(width="400px"))
            box.tooltip = spec.help
            widgets[spec.name] = box
            self._option_defaults[spec.name] = box.value
        self._option_widgets = widgets
        rows = [w.HBox([box, w.HTML(f"<small>{_esc(spec.help)}</small>")])
                for spec, box in zip(option_specs(self.strategy.value), widgets.values(), strict=True)]
        self.options_box.children = [w.VBox(rows)] if rows else []
        self.options_box.set_title(0, f"options of {self.strategy.value} ({len(rows)})")
        self.options_box.selected_index = None

    # -- controller -> views (called from the run's thread) ------------------------------
    def _on_run(self, event: str, run: Run) -> None:
        with self._lock:
            if event == "start":
                # On the lab the run goes from where the VM really is: show that.
                self.source.value, self.destination.value = run.params.source, run.params.destination
                self.migrate_button.disabled = True
                self.abort_button.disabled = False
                self.result.value = ""
                self.timeline.value = b""
                self.progress.value = 0.0
                self.progress.bar_style = ""
                if run.prediction is not None:
                    self.prediction.value = ("<b>simulator's prediction for these parameters</b>"
                                             + tables.result_table_html(run.prediction).replace(
                                                 "labmig-result", "labmig-prediction"))
                self._last_draw = 0.0
            elif event == "point":
                self.progress.value = run.progress
                self.phase.value = _esc(run.phase_text)
                if time.monotonic() - self._last_draw >= _REDRAW_EVERY:
                    self._draw(run)
            elif event == "done":
                self._draw(run)
                self.migrate_button.disabled = False
                self.abort_button.disabled = True
                if run.error is not None:
                    self.progress.bar_style = "danger"
                    self.phase.value = f"<b style='color:#c44e52'>failed:</b> {_esc(str(run.error))}"
                    return
                result = run.result
                assert result is not None  # a run that ended without an error has one
                self.progress.value = 1.0 if result.completed else run.progress
                self.progress.bar_style = "success" if result.completed else "warning"
                words = result.message.removeprefix(f"{result.outcome}: ")
                self.phase.value = f"<b>{result.outcome}</b>: {_esc(words)}"
                number = self.controller.runs.index(run) + 1
                self.result.value = (f'<div class="labmig-run" data-run="{number}">'
                                     f"{tables.result_table_html(result, run.prediction)}</div>")
                self.prediction.value = ""

    def _draw(self, run: Run) -> None:
        points = run.result.timeline if run.result is not None else list(run.points)
        title = f"{run.params.kind} migration of {run.params.vm} ({run.params.strategy}, {run.params.backend})"
        start = parse_size(run.params.memory) if run.params.kind == "live" else None
        self.timeline.value = plots.png(plots.timeline_figure(points, title, start_bytes=start))
        self._last_draw = time.monotonic()


class ComparisonView:
    """Every finished run of a controller: the live-vs-cold table and bar plots across runs."""

    def __init__(self, controller: MigrationController) -> None:
        self.controller = controller
        self.table = w.HTML()
        self.plot = w.Image(format="png", layout=w.Layout(max_width="680px"))
        self.widget = w.VBox([w.HTML("<b>live vs cold, measured</b>"), self.table, self.plot])
        self.widget.add_class("labmig-comparison")
        controller.observe(self._on_run)
        self.refresh()

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)

    def refresh(self) -> None:
        results = self.controller.results
        self.table.value = tables.comparison_table_html(results)
        if results:
            self.plot.value = plots.png(plots.comparison_figure(results))

    def _on_run(self, event: str, run: Run) -> None:
        if event == "done":
            self.refresh()


def _esc(text: str) -> str:
    from html import escape

    return escape(text).replace("\n", "<br>")
