"""Figures of posteriors and their evaluation (matplotlib, headless Agg; corner for corner plots).

Every function returns a matplotlib Figure; :func:`save` writes it as PNG and closes it.
Parameters are (teff, logg, mh, av, rv); ``LABELS`` carries their units.
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from irisml_tf.physics.simulator import PARAM_NAMES

__all__ = ["pyplot", "save", "LABELS", "calibration_curves", "predicted_vs_true",
           "sbc_histograms", "is_diagnostics", "corner_comparison"]

LABELS = {"teff": "teff [K]", "logg": "logg [dex]", "mh": "mh [dex]", "av": "av [mag]", "rv": "rv"}
_COLOURS = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown")


def pyplot():
    """matplotlib.pyplot on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def save(fig, path: str | Path, dpi: int = 110) -> Path:
    """Write ``fig`` as PNG to ``path`` and close it."""
    path = Path(path)
    fig.savefig(path, dpi=dpi)
    pyplot().close(fig)
    return path


def _panels(n: int, width: float = 3.2, height: float = 3.0):
    fig, axes = pyplot().subplots(1, n, figsize=(width * n, height), squeeze=False, layout="constrained")
    return fig, axes[0]


def calibration_curves(levels, curves: Mapping[str, tuple[np.ndarray, np.ndarray]], n_stars: int | None = None):
    """Expected coverage against nominal level, one panel per parameter.

    Args:
      levels: nominal levels α [L].
      curves: label (band set) → (coverage before IS [L, D], after IS [L, D]); before is dashed,
        after solid, one colour per label.
      n_stars: draws the 95 % binomial band of a calibrated posterior for this many stars.
    """
    levels = np.asarray(levels, np.float64)
    fig, axes = _panels(len(PARAM_NAMES))
    for d, (ax, name) in enumerate(zip(axes, PARAM_NAMES)):
        ax.plot([0, 1], [0, 1], color="0.5", lw=0.8)
        if n_stars:
            half = 1.96 * np.sqrt(levels * (1 - levels) / n_stars)
            ax.fill_between(levels, levels - half, levels + half, color="0.85", lw=0)
        for i, (label, (before, after)) in enumerate(curves.items()):
            c = _COLOURS[i % len(_COLOURS)]
            ax.plot(levels, np.asarray(before)[:, d], color=c, ls="--", lw=1)
            ax.plot(levels, np.asarray(after)[:, d], color=c, lw=1.3, label=label)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_title(name)
        ax.set_xlabel("nominal level")
        if d == 0:
            ax.set_ylabel("expected coverage")
            ax.legend(fontsize=7, loc="upper left", title="solid: after IS\ndashed: before",
                      title_fontsize=6)
    return fig


def predicted_vs_true(truth, estimate, colour=None, colour_label: str = "", title: str = ""):
    """Posterior median against the truth, one panel per parameter, 1:1 line and RMSE.

    truth, estimate: [S, D]; colour: optional [S] values for the point colours.
    """
    truth = np.asarray(truth, np.float64)
    est = np.asarray(estimate, np.float64)
    fig, axes = _panels(len(PARAM_NAMES), height=3.3)
    sc = None
    for d, (ax, name) in enumerate(zip(axes, PARAM_NAMES)):
        ok = np.isfinite(est[:, d])
        lo = float(np.nanmin([truth[:, d].min(), np.nanmin(est[ok, d]) if ok.any() else np.inf]))
        hi = float(np.nanmax([truth[:, d].max(), np.nanmax(est[ok, d]) if ok.any() else -np.inf]))
        ax.plot([lo, hi], [lo, hi], color="0.4", lw=0.8)
        sc = ax.scatter(truth[ok, d], est[ok, d], s=3, lw=0, alpha=0.6,
                        c=None if colour is None else np.asarray(colour)[ok], cmap="viridis")
        rmse = np.sqrt(np.mean((est[ok, d] - truth[ok, d]) ** 2)) if ok.any() else np.nan
        ax.text(0.04, 0.94, f"RMSE {rmse:.3g}", transform=ax.transAxes, fontsize=8, va="top")
        ax.set_xlabel(f"true {LABELS[name]}")
        ax.set_ylabel(f"median {LABELS[name]}")
    if colour is not None and sc is not None:
        fig.colorbar(sc, ax=list(axes), fraction=0.02, pad=0.01, label=colour_label)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def sbc_histograms(hists: Mapping[str, Mapping], title: str = ""):
    """SBC rank histograms: one row per entry of ``hists`` (e.g. before / after IS), one column
    per parameter, each with the uniform expectation and its binomial band (grey).

    hists: label → :func:`irisml_tf.inference.metrics.rank_histogram` result.
    """
    plt = pyplot()
    rows = len(hists)
    fig, axes = plt.subplots(rows, len(PARAM_NAMES), figsize=(3.0 * len(PARAM_NAMES), 2.4 * rows),
                             squeeze=False, layout="constrained")
    for r, (label, h) in enumerate(hists.items()):
        edges = np.asarray(h["edges"])
        counts = np.asarray(h["counts"])
        for d, name in enumerate(PARAM_NAMES):
            ax = axes[r, d]
            ax.fill_between(edges, np.append(h["band_lo"][:, d], h["band_lo"][-1, d]),
                            np.append(h["band_hi"][:, d], h["band_hi"][-1, d]), step="post",
                            color="0.85", lw=0)
            ax.stairs(counts[:, d], edges, color="k", lw=1)
            ax.stairs(np.asarray(h["expected"])[:, d], edges, color="0.5", lw=0.8, ls="--")
            ax.set_yticks([])
            ax.set_title(f"{name} ({label}) p={h['pvalue'][d]:.2g}", fontsize=8)
            if r == rows - 1:
                ax.set_xlabel("rank of truth")
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def is_diagnostics(efficiency: Mapping[str, np.ndarray], khat: Mapping[str, np.ndarray],
                   min_efficiency: float = 0.1, max_khat: float = 0.7):
    """Histograms of importance-sampling efficiency (log axis) and Pareto k̂, one line per label,
    with the efficiency target and the k̂ trust limit marked."""
    fig, (a, b) = _panels(2, width=4.2)
    bins_e = np.logspace(-4, 0, 41)
    for i, (label, e) in enumerate(efficiency.items()):
        e = np.asarray(e, np.float64)
        a.hist(np.clip(e[np.isfinite(e)], 1e-4, 1), bins=bins_e, histtype="step",
               color=_COLOURS[i % len(_COLOURS)], label=label)
    a.set_xscale("log")
    a.axvline(min_efficiency, color="0.4", ls=":")
    a.set_xlabel("IS efficiency ESS/N")
    a.set_ylabel("stars")
    a.legend(fontsize=7)
    bins_k = np.linspace(-0.5, 1.5, 41)
    for i, (label, k) in enumerate(khat.items()):
        k = np.asarray(k, np.float64)
        b.hist(np.clip(k[~np.isnan(k)], -0.5, 1.5), bins=bins_k, histtype="step",
               color=_COLOURS[i % len(_COLOURS)], label=label)
    b.axvline(max_khat, color="0.4", ls=":")
    b.set_xlabel("Pareto k̂ (clipped to [−0.5, 1.5])")
    return fig


def corner_comparison(draws: Mapping[str, tuple[np.ndarray, np.ndarray | None]], truth=None,
                      bins: int = 30):
    """One corner plot overlaying several posteriors of the same star.

    draws: label → (samples [N, D], weights [N] or None), drawn in order in distinct colours
    (e.g. the flow, the flow after importance sampling, MCMC). truth: [D] marked in red.
    Ranges cover the central 99.8 % of all (weighted) draws.
    """
    import corner
    from matplotlib.lines import Line2D

    items = [(k, np.asarray(s, np.float64), None if w is None else np.asarray(w, np.float64))
             for k, (s, w) in draws.items()]
    ranges = []
    for d in range(len(PARAM_NAMES)):
        lo = min(np.quantile(s[:, d], 0.001) for _, s, _ in items)
        hi = max(np.quantile(s[:, d], 0.999) for _, s, _ in items)
        if truth is not None:
            lo, hi = min(lo, float(truth[d])), max(hi, float(truth[d]))
        ranges.append((lo, hi) if hi > lo else (lo - 0.5, hi + 0.5))
    fig = None
    handles = []
    for i, (label, s, w) in enumerate(items):
        c = _COLOURS[i % len(_COLOURS)]
        fig = corner.corner(s, weights=w, fig=fig, range=ranges, bins=bins, color=c,
                            labels=[LABELS[p] for p in PARAM_NAMES], smooth=0.8,
                            plot_datapoints=False, plot_density=False, fill_contours=False,
                            levels=(0.39, 0.86), hist_kwargs={"density": True})
        handles.append(Line2D([], [], color=c, label=label))
    # corner fixes each 1-d panel's height from the first posterior: fit the tallest of them
    d = len(PARAM_NAMES)
    for i in range(d):
        ax = fig.axes[i * d + i]
        top = max((pt.get_path().vertices[:, 1].max() for pt in ax.patches), default=0.0)
        if top > 0:
            ax.set_ylim(0, 1.1 * top)
    if truth is not None:
        corner.overplot_lines(fig, np.asarray(truth, np.float64), color="tab:red", lw=1)
        handles.append(Line2D([], [], color="tab:red", label="truth"))
    fig.legend(handles=handles, loc="upper right", fontsize=10, frameon=False)
    return fig
