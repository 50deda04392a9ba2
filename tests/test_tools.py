"""Plots return their Figure; the progress bar closes cleanly and stays quiet off a terminal."""

import io

import numpy as np
from matplotlib.figure import Figure

from rnn_scratch.plots import plot_curves, plot_forecast, plot_loss
from rnn_scratch.progress import progress


def test_plots_return_the_figure_and_save_only_when_asked(tmp_path):
    fig = plot_forecast(np.sin(np.arange(10)), np.cos(np.arange(10)), history=np.zeros(5), title="t")
    assert isinstance(fig, Figure) and not list(tmp_path.iterdir())
    fig.axes[0].set_title("restyled")  # a caller may change it before saving
    for make in (lambda p: plot_loss([1.0, 0.5], path=p), lambda p: plot_curves({"a": [1, 2]}, title="c", path=p)):
        path = tmp_path / f"{len(list(tmp_path.iterdir()))}.png"
        assert isinstance(make(str(path)), Figure) and path.stat().st_size > 1000


class FakeTTY(io.StringIO):
    def isatty(self):
        return True


def test_progress_bar_ends_its_line_on_break_and_exception():
    out = FakeTTY()
    with progress(range(10), desc="x", file=out) as bar:
        for i in bar:
            if i == 3:
                break
    assert out.getvalue().endswith("\n") and out.getvalue().count("\n") == 1 and "3/10" in out.getvalue()
    out = FakeTTY()
    try:
        with progress(range(10), desc="y", file=out) as bar:
            for i in bar:
                if i == 2:
                    raise RuntimeError
    except RuntimeError:
        pass
    assert out.getvalue().endswith("\n") and out.getvalue().count("\n") == 1
    out = FakeTTY()
    bar = progress(range(5), file=out)
    for i in bar:  # no context manager: breaking out still ends the line (the generator closes)
        if i == 1:
            break
    del i
    bar.close()
    assert out.getvalue().count("\n") == 1


def test_progress_bar_off_a_terminal_writes_one_final_line():
    out = io.StringIO()
    with progress(range(50), desc="train", file=out) as bar:
        for _ in bar:
            bar.set(loss=0.5)
    assert out.getvalue().count("\n") == 1 and "50/50" in out.getvalue() and "loss=0.5" in out.getvalue()
    quiet = io.StringIO()
    for _ in progress(range(3), file=quiet, disable=True):
        pass
    assert quiet.getvalue() == ""
