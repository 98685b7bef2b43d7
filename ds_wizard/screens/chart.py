"""The loss chart: step against loss with axes, one or several runs overlaid.

One widget for the launch step (the run it follows) and the Runs screen (the runs the
user selected), drawn by textual-plotext rather than by hand.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from textual_plotext import PlotextPlot

Series = Sequence[tuple[int, float]]  # (step, loss)
MAX_POINTS = 400  # per series: a terminal is at most a few hundred cells wide


def thin(points: Series, limit: int = MAX_POINTS) -> list[tuple[int, float]]:
    """Every n-th point, keeping the last, so a long run draws as fast as a short one."""
    pts = list(points)
    if len(pts) <= limit:
        return pts
    stride = -(-len(pts) // limit)
    out = pts[::stride]
    if out[-1] != pts[-1]:
        out.append(pts[-1])
    return out


def points_of(records: Sequence[Mapping[str, object]]) -> list[tuple[int, float]]:
    """(step, loss) from metrics records, skipping any without both."""
    out = []
    for r in records:
        step, loss = r.get("step"), r.get("loss")
        if isinstance(step, int) and isinstance(loss, (int, float)) \
                and not isinstance(loss, bool):
            out.append((step, float(loss)))
    return out


class LossChart(PlotextPlot):
    """``set_series({"run-a": [(1, 5.2), …], …})`` redraws; an empty mapping says so."""

    def __init__(self, *, empty: str = "no loss logged yet", id: str | None = None,
                 classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self.empty = empty
        self.series: dict[str, list[tuple[int, float]]] = {}
        self._draw()

    def set_series(self, series: Mapping[str, Series]) -> None:
        self.series = {name: thin(pts) for name, pts in series.items() if pts}
        self._draw()
        self.refresh()

    def _draw(self) -> None:
        plt = self.plt
        plt.clear_data()
        plt.clear_figure()
        plt.xlabel("step")
        plt.ylabel("loss")
        if not self.series:
            plt.title(self.empty)
            return
        plt.title("loss")
        many = len(self.series) > 1
        for name, pts in self.series.items():
            steps = [s for s, _ in pts]
            losses = [v for _, v in pts]
            plt.plot(steps, losses, marker="braille", label=name if many else None)
