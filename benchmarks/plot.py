"""HDR percentile-distribution plot: latency (ms) against percentile on a log scale.

The x axis is ``1 / (1 - p)``, labelled 0%, 90%, 99%, 99.9%, 99.99%, as HdrHistogram's own
plotter draws it, so the tail gets as much room as the body.
"""

from __future__ import annotations

from typing import Any, Optional

__all__ = ["percentile_curve", "plot_latency"]

_TICKS = (0.0, 90.0, 99.0, 99.9, 99.99)


def percentile_curve(
    histogram: Any, max_percentile: float = 99.999
) -> tuple[list[float], list[float]]:
    """(x = 1/(1-p), latency ms) points, 10 per halving of the distance to 100%."""
    xs: list[float] = []
    ys: list[float] = []
    total = histogram.get_total_count()
    k = 0
    while True:
        p = 100.0 * (1.0 - 0.5 ** (k / 10.0))
        # Stop where fewer than one request is left beyond p: the curve would be fiction.
        if p > max_percentile or (total and (1.0 - p / 100.0) * total < 1.0):
            break
        xs.append(1.0 / (1.0 - p / 100.0))
        ys.append(histogram.get_value_at_percentile(p) / 1000.0)
        k += 1
    return xs, ys


def plot_latency(series: dict[str, tuple[Any, str]], path: str, title: str) -> Optional[str]:
    """Draw ``{name: (histogram_us, legend)}`` to ``path``; returns why not if it cannot."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib not installed"
    figure, axes = plt.subplots(figsize=(9, 5.5), dpi=110)
    for name, (histogram, legend) in series.items():
        if histogram is None or histogram.get_total_count() == 0:
            continue
        xs, ys = percentile_curve(histogram)
        axes.plot(xs, ys, label=legend or name, linewidth=1.8)
    axes.set_xscale("log")
    axes.set_xticks([1.0 / (1.0 - p / 100.0) for p in _TICKS])
    axes.set_xticklabels([f"{p:g}%" for p in _TICKS])
    axes.set_xlim(1.0, 1.0 / (1.0 - 99.99 / 100.0))
    axes.set_ylim(bottom=0)
    axes.set_xlabel("percentile")
    axes.set_ylabel("latency (ms)")
    axes.set_title(title, fontsize=10)
    axes.grid(True, which="major", alpha=0.4)
    axes.legend(loc="upper left")
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return None
