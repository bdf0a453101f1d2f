"""Validation metrics of a posterior model on a fixed validation set, and their figures.

* ``nll``: mean −log q(θ | x) over the whole set (θ in physical units, so it includes the
  parameter transform's Jacobian; comparable between runs on the same set).
* ``rmse``: per parameter, the RMSE of the posterior median (from ``num_samples`` draws per star)
  against the true θ, on the first ``num_stars`` stars, in physical units (K, dex, dex, mag, —).
* ``coverage``: per level α and parameter, the fraction of stars whose true value lies inside
  the central α interval of its marginal posterior draws (well calibrated: coverage = α);
  ``calibration_error``: max |coverage − α| over the configured levels and parameters.
* figures: calibration curves (empirical coverage against nominal level, one line per
  parameter) and a corner plot of one star's posterior with the truth marked.

The rules are the evaluation's (:mod:`irisml_tf.inference.metrics`: RMSE, coverage from the PIT)
and the corner plot is :func:`irisml_tf.plots.corner_comparison`, so training-time validation and
``irisml-tf evaluate`` measure the same thing. The posterior draws use fixed stateless seeds, so
two evaluations differ only through the model.
"""
from __future__ import annotations

import io
from collections.abc import Mapping, Sequence

import numpy as np
import tensorflow as tf

from irisml_tf import plots
from irisml_tf.inference.metrics import coverage_from_pit, max_abs_deviation, pit, point_errors
from irisml_tf.model.transform import PARAM_NAMES

__all__ = ["Validator", "calibration_figure", "figure_to_image"]

#: nominal levels of the calibration curves drawn in the figure
CURVE_LEVELS = np.round(np.linspace(0.05, 0.95, 19), 2)
_INPUTS = ("band_index", "mag", "mag_err")


class Validator:
    """Evaluates a :class:`~irisml_tf.model.PosteriorModel` on a fixed validation set.

    Args:
      arrays: ``band_index`` [V, K], ``mag`` [V, K], ``mag_err`` [V, K], ``theta`` [V, 5]
        (see :meth:`irisml_tf.data.stream.SimulationStream.validation_set`).
      levels: interval levels reported as scalars.
      num_stars, num_samples: stars (the first ones) and draws per star for RMSE / calibration.
      batch_size: stars per log-prob batch.
      corner_samples: draws of star 0 for the corner plot.
      seed: stateless seed of the posterior draws.
    """

    def __init__(self, arrays: Mapping[str, np.ndarray], levels: Sequence[float],
                 num_stars: int, num_samples: int, batch_size: int = 1024,
                 corner_samples: int = 2000, seed: int = 0):
        self.arrays = {k: np.asarray(arrays[k]) for k in (*_INPUTS, "theta")}
        self.size = len(self.arrays["theta"])
        self.levels = [float(a) for a in levels]
        self.num_stars = min(int(num_stars), self.size)
        self.num_samples = int(num_samples)
        self.batch_size = min(int(batch_size), self.size)
        self.corner_samples = int(corner_samples)
        self.seed = int(seed)
        # stars per sampling call: about 8192 draws at once
        self.chunk = max(1, min(self.num_stars, 8192 // self.num_samples))
        self._fns = {}

    # -- compiled pieces (one trace each: fixed shapes) ----------------------------------------
    def _functions(self, model):
        key = id(model)
        if key not in self._fns:
            self._fns = {key: (
                tf.function(lambda t, b, m, e: model.log_prob(t, b, m, e)),
                tf.function(lambda b, m, e, s: model.sample(self.num_samples, b, m, e, seed=s)),
                tf.function(lambda b, m, e, s: model.sample(self.corner_samples, b, m, e, seed=s)),
            )}
        return self._fns[key]

    @staticmethod
    def _pad(arrays: Mapping[str, np.ndarray], start: int, size: int):
        """Rows start..start+size of each array, padded with copies of the first row."""
        out = {}
        for k, a in arrays.items():
            part = a[start:start + size]
            if len(part) < size:
                part = np.concatenate([part, np.repeat(a[:1], size - len(part), axis=0)])
            out[k] = part
        return out

    # -- metrics ---------------------------------------------------------------------------------
    def nll(self, model) -> float:
        log_prob, _, _ = self._functions(model)
        total, count = 0.0, 0
        for start in range(0, self.size, self.batch_size):
            x = self._pad(self.arrays, start, self.batch_size)
            lp = log_prob(x["theta"], x["band_index"], x["mag"], x["mag_err"]).numpy()
            n = min(self.batch_size, self.size - start)
            total += float(np.sum(lp[:n].astype(np.float64)))
            count += n
        return -total / count

    def posterior_samples(self, model) -> np.ndarray:
        """Draws [num_stars, num_samples, 5] for the first ``num_stars`` stars."""
        _, sample, _ = self._functions(model)
        head = {k: v[:self.num_stars] for k, v in self.arrays.items()}
        out = []
        for i, start in enumerate(range(0, self.num_stars, self.chunk)):
            x = self._pad(head, start, self.chunk)
            s = sample(x["band_index"], x["mag"], x["mag_err"],
                       tf.constant([self.seed, i], tf.int32)).numpy()
            out.append(s[:min(self.chunk, self.num_stars - start)])
        return np.concatenate(out)

    def corner_draws(self, model, star: int = 0) -> np.ndarray:
        _, _, sample = self._functions(model)
        x = {k: v[star:star + 1] for k, v in self.arrays.items()}
        return sample(x["band_index"], x["mag"], x["mag_err"],
                      tf.constant([self.seed, -1], tf.int32)).numpy()[0]

    def evaluate(self, model) -> dict:
        """All metrics as plain Python values, plus ``figures`` as PNG-decoded arrays."""
        truth = self.arrays["theta"][:self.num_stars].astype(np.float64)
        draws = self.posterior_samples(model).astype(np.float64)
        rmse = point_errors(np.median(draws, axis=1), truth)["rmse"]
        u = pit(draws, truth)
        cov = coverage_from_pit(u, self.levels)[0]
        curve = coverage_from_pit(u, CURVE_LEVELS)[0]
        result = {
            "nll": self.nll(model),
            "rmse": {p: float(r) for p, r in zip(PARAM_NAMES, rmse)},
            "coverage": {f"{a:g}": {p: float(c) for p, c in zip(PARAM_NAMES, row)}
                         for a, row in zip(self.levels, cov)},
            "calibration_error": float(np.max(max_abs_deviation(cov, self.levels))),
        }
        corner = plots.corner_comparison({"flow": (self.corner_draws(model), None)},
                                         self.arrays["theta"][0])
        curves = calibration_figure(CURVE_LEVELS, curve)
        result["figures"] = {"calibration_curves": figure_to_image(curves),
                             "corner": figure_to_image(corner, dpi=64)}
        return result


# -- figures ----------------------------------------------------------------------------------
def calibration_figure(levels: np.ndarray, curve: np.ndarray):
    """Empirical coverage [L, D] against nominal levels [L]: one line per parameter, one panel.

    (:func:`irisml_tf.plots.calibration_curves` draws before/after-importance-sampling pairs in a
    panel per parameter; validation has the flow's draws only.)
    """
    fig, ax = plots.pyplot().subplots(figsize=(4.5, 4.5), dpi=80)
    ax.plot([0, 1], [0, 1], color="0.6", lw=1, ls="--", label="ideal")
    for d, name in enumerate(PARAM_NAMES):
        ax.plot(levels, curve[:, d], marker="o", ms=3, lw=1.2, label=name)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("nominal level of the central interval")
    ax.set_ylabel("empirical coverage")
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    return fig


def figure_to_image(fig, dpi: float | None = None) -> np.ndarray:
    """RGBA uint8 image [1, H, W, 4] of a matplotlib figure, for tf.summary.image (the figure is
    closed)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi or fig.dpi)
    plots.pyplot().close(fig)
    return tf.io.decode_png(buf.getvalue(), channels=4).numpy()[None]
