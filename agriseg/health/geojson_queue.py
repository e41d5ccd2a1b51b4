"""The GeoJSON text of a pass's polygons: made where a core is free, written in order.

The text of each batch of polygons is cut into slices
(:meth:`agriseg.health.vector_outputs.GeoJSONWriter.encoders`); a slice is made by
this process while it would only wait for panes, or by the task runner, and the
slices are written to the file in the order of their polygons whatever made them.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import geopandas as gpd

from agriseg.health.geojson import FeatureText
from agriseg.health.vector_outputs import (
    GeoJSONWriter,
)

if TYPE_CHECKING:
    pass
from agriseg.health.task_runner import Pending, TaskRunner, run_inline


@dataclass
class _Text:
    """One slice of a batch's GeoJSON text: how to make it, and where it is being made."""

    encode: Callable[[], FeatureText]
    pending: Pending[FeatureText] | None = None


class GeoJSONTexts:
    """The GeoJSON text of the polygon batches, made where a core is free and written in
    order.

    This process makes slices while it would only wait for panes (:meth:`make_while`);
    slices it has not made go to the runner once more than ``2 x runner.parallel`` wait,
    and all of them once the runner has no panes left (:attr:`runner_idle`).
    """

    def __init__(self, writer: GeoJSONWriter, run: TaskRunner) -> None:
        self._writer = writer
        self._run = run
        self._texts: deque[_Text] = deque()
        #: Whether the runner has no more panes to run.
        self.runner_idle = False

    def add(self, frame: gpd.GeoDataFrame) -> None:
        """Queue the text of ``frame``'s rows, after the rows queued before."""
        self._texts.extend(_Text(e) for e in self._writer.encoders(frame, self._run.parallel))
        waiting = [text for text in self._texts if text.pending is None]
        keep = 0 if self.runner_idle else 2 * self._run.parallel
        for text in waiting[: max(0, len(waiting) - keep)]:
            text.pending = self._run(text.encode)
        self._write_done()

    def make_while(self, running: Pending[Any]) -> None:
        """Make queued slices here until ``running`` is done."""
        for text in self._texts:
            if running.done():
                break
            if text.pending is None:
                text.pending = run_inline(text.encode)
        self._write_done()

    def finish(self) -> None:
        """Make what is left (on the runner) and write it all."""
        for text in self._texts:
            if text.pending is None:
                text.pending = self._run(text.encode)
        while self._texts:
            pending = self._texts.popleft().pending
            assert pending is not None
            self._writer.write_text(pending.result())

    def _write_done(self) -> None:
        while self._texts and (pending := self._texts[0].pending) and pending.done():
            self._writer.write_text(pending.result())
            self._texts.popleft()
