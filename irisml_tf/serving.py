"""The exported model: a SavedModel whose one signature runs the whole posterior in the graph.

``export_model(run_dir, out_dir)`` writes a SavedModel with the signature ``serving_default``:

  inputs   band_index int32 [B, K] (−1 pads, any order), mag float32 [B, K], mag_err float32 [B, K],
           num_samples int32 [] (clipped to 1 … max_samples), seed int32 [B, 2] (one stateless
           seed per star: a star's draws depend on its own seed, not on the rows it shares a call with)
  outputs  samples [B, N, 5] (teff, logg, mh, av, rv in physical units), log_q, log_weights,
           weights [B, N]; ess, efficiency, khat, chi2, chi2_pvalue, mu [B]; outlier_band,
           flag_bits, n_bands int32 [B]; weighted summaries median, p16, p84, mean, std [B, 5] and
           the unweighted (before importance sampling) q_median … q_std [B, 5].

Flow sampling, THE simulator (grid and extinction tables as graph constants, no XLA), prior,
likelihood, PSIS, summaries and flags are all graph ops: TF Serving, ``saved_model_cli run`` and
``tf.saved_model.load`` in a process without irisml_tf or TFP run it. Entries whose band index is
out of range, or whose magnitude or error is not finite, or whose error is ≤ 0, count as pads.
``assets/irisml.json`` holds what a client needs besides the graph (band order, parameter names,
the grid's sha256, the run's config — its ``observation`` section has min_bands, the error range
and sys_floor — and training record); :func:`load_model` reads both. ``assets/run/`` is
the run's config.yaml and weights: ``irisml_tf.rundir.load_posterior(OUT/"assets"/"run")``
rebuilds the library model (``ExportedModel.run_dir``).
"""
from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import tensorflow as tf

from irisml_tf.inference.summaries import DEFAULT_QUANTILES, SUMMARY_NAMES

__all__ = ["export_model", "load_model", "ExportedModel", "ModelMeta", "TrainingRecord",
           "default_model_path", "check_export", "compare_outputs", "quantile_level_miss",
           "ExportCheck", "SIGNATURE", "OUTPUT_KEYS", "META_FILE", "QUANTILE_LEVELS",
           "NEGLIGIBLE_WEIGHT", "WEIGHT_OUTPUTS"]

SIGNATURE = "serving_default"
META_FILE = "irisml.json"
OUTPUT_KEYS = (("samples", "log_q", "log_weights", "weights", "ess", "efficiency", "khat", "chi2",
                "chi2_pvalue", "mu", "outlier_band", "flag_bits", "n_bands")
               + SUMMARY_NAMES + tuple(f"q_{k}" for k in SUMMARY_NAMES))
_SPEC = [tf.TensorSpec([None, None], tf.int32, name="band_index"),
         tf.TensorSpec([None, None], tf.float32, name="mag"),
         tf.TensorSpec([None, None], tf.float32, name="mag_err"),
         tf.TensorSpec([], tf.int32, name="num_samples"),
         tf.TensorSpec([None, 2], tf.int32, name="seed")]


@dataclass(frozen=True)
class TrainingRecord:
    """How far the exported run trained (``metrics.json`` of the run at export time)."""

    status: str | None = None  # "completed", "interrupted", "running" (metrics.json of the driver)
    step: int | None = None
    steps_total: int | None = None
    num_parameters: int | None = None
    session_wall_seconds: float | None = None
    validation: Mapping | None = None

    @property
    def complete(self) -> bool:
        return self.status == "completed"


@dataclass(frozen=True)
class ModelMeta:
    """``assets/irisml.json``: what a client needs besides the graph."""

    bands: tuple[str, ...]
    param_names: tuple[str, ...]
    lower: tuple[float, ...]
    upper: tuple[float, ...]
    max_samples: int
    flag_bits: Mapping[str, int]
    grid_sha256: str
    config: Mapping  # the run's resolved config (model, observation, prior, training)
    training: TrainingRecord = field(default_factory=TrainingRecord)
    run_dir: str = ""
    signature: str = SIGNATURE
    irisml_tf_version: str = ""
    tensorflow_version: str = ""
    format: int = 1

    @property
    def observation(self):
        """The run's resolved :class:`~irisml_tf.data.observation.ObservationConfig`."""
        from irisml_tf.data.observation import ObservationConfig

        return ObservationConfig.from_dict(self.config["observation"])

    @classmethod
    def from_json(cls, d: Mapping) -> ModelMeta:
        d = dict(d)
        tr = {k: v for k, v in (d.pop("training", None) or {}).items() if k in TrainingRecord.__dataclass_fields__}
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        for k in ("bands", "param_names", "lower", "upper"):
            known[k] = tuple(known[k])
        return cls(training=TrainingRecord(**tr), **known)

    def to_json(self) -> dict:
        d = asdict(self)
        for k in ("bands", "param_names", "lower", "upper"):
            d[k] = list(d[k])
        return d


def default_model_path() -> Path:
    """$IRISML_TF_MODEL, else the shipped model: ``default/`` of the package data
    ``irisml_tf.saved_models`` (the top-level saved_models/ folder, mapped by setup.cfg), found by
    importlib.resources in a checkout's editable install and in an installed package alike."""
    from importlib.resources import files

    env = os.environ.get("IRISML_TF_MODEL")
    if env:
        return Path(env)
    try:
        root = files("irisml_tf.saved_models")
    except ModuleNotFoundError:  # an editable install made before saved_models became package data
        raise ModuleNotFoundError("irisml_tf.saved_models is not installed: reinstall irisml-tf "
                                  "(`pip install -e .` in a checkout)") from None
    return Path(str(root)) / "default"


class _Serving(tf.Module):
    def __init__(self, posterior, simulator, prior, sys_floor: float, max_samples: int):
        super().__init__(name="irisml")
        self.posterior, self.simulator, self.prior = posterior, simulator, prior
        # the C++ loader (TF Serving, saved_model_cli) only finds variables tracked as tf.Variables
        self._weights = [v.value for v in posterior.variables]
        self._sys_floor, self._max_samples = float(sys_floor), int(max_samples)

    @tf.function(input_signature=_SPEC)
    def serve(self, band_index, mag, mag_err, num_samples, seed):
        from irisml_tf.inference.importance import run_importance_sampling

        nb = self.simulator.num_bands
        good = ((band_index >= 0) & (band_index < nb) & tf.math.is_finite(mag)
                & tf.math.is_finite(mag_err) & (mag_err > 0))
        inputs = {"band_index": tf.where(good, band_index, -1), "mag": tf.where(good, mag, 0.0),
                  "mag_err": tf.where(good, mag_err, 1.0)}
        n = tf.clip_by_value(num_samples, 1, self._max_samples)
        out = run_importance_sampling(self.posterior, self.simulator, self.prior, inputs, n, seed,
                                      self._sys_floor)
        return {k: out[k] for k in OUTPUT_KEYS}


def _meta(run_dir: Path, config: dict, simulator, prior, max_samples: int) -> ModelMeta:
    from importlib.metadata import version

    from irisml_tf.inference.flags import FLAG_BITS
    from irisml_tf.physics.simulator import PARAM_NAMES

    metrics_path = run_dir / "metrics.json"
    metrics = json.loads(metrics_path.read_text()) if metrics_path.exists() else {}
    return ModelMeta(
        irisml_tf_version=version("irisml-tf"), tensorflow_version=tf.__version__,
        bands=tuple(simulator.bands), param_names=tuple(PARAM_NAMES),
        lower=tuple(float(v) for v in prior.lower), upper=tuple(float(v) for v in prior.upper),
        max_samples=int(max_samples), flag_bits=dict(FLAG_BITS), grid_sha256=simulator.grid.sha256,
        run_dir=str(run_dir), config=config,
        training=TrainingRecord(**{k: metrics.get(k) for k in TrainingRecord.__dataclass_fields__}))


def export_model(run_dir: str | Path, out_dir: str | Path, *, max_samples: int = 20000,
                 weights: str | Path | None = None, overwrite: bool = False) -> Path:
    """Write the SavedModel of a training run (its final weights, or the latest checkpoint)."""
    from irisml_tf.physics.prior import Prior
    from irisml_tf.physics.simulator import Simulator
    from irisml_tf.rundir import load_posterior
    from irisml_tf.training.config import load_config

    run_dir, out_dir = Path(run_dir), Path(out_dir)
    if not (run_dir / "config.yaml").exists():
        raise FileNotFoundError(f"{run_dir} is not a training run directory (no config.yaml)")
    if max_samples < 1:
        raise ValueError(f"`max_samples` must be >= 1, got {max_samples}")
    if out_dir.exists():
        if not overwrite:
            raise FileExistsError(f"{out_dir} exists; pass overwrite=True (CLI: --overwrite) to replace it")
        shutil.rmtree(out_dir)
    config = load_config(run_dir / "config.yaml")
    posterior = load_posterior(run_dir, weights)
    simulator = Simulator(jit_compile=False)
    prior = Prior(config["prior"], simulator.grid)
    module = _Serving(posterior, simulator, prior, config["observation"]["sys_floor"], max_samples)
    tf.saved_model.save(module, str(out_dir), signatures={SIGNATURE: module.serve})
    # the run itself (config + weights) rides along, so the library can rebuild the same model
    (out_dir / "assets" / "run").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(run_dir / "config.yaml", out_dir / "assets" / "run" / "config.yaml")
    posterior.save_weights(str(out_dir / "assets" / "run" / "final.weights.h5"))
    meta = _meta(run_dir, config, simulator, prior, max_samples)
    (out_dir / "assets" / META_FILE).write_text(json.dumps(meta.to_json(), indent=1) + "\n")
    return out_dir


def _seeds(seed, n: int) -> np.ndarray:
    """Per-star seeds int32 [n, 2]: ``seed`` as given when it is [n, 2], else
    :func:`irisml_tf.rowseed.call_seeds` of an int or two ints."""
    from irisml_tf.rowseed import call_seeds

    if np.ndim(seed) == 2:
        if np.shape(seed) != (n, 2):
            raise ValueError(f"per-star `seed` must be [B, 2] with B = {n}, got {np.shape(seed)}")
        return np.asarray(seed, np.int64).astype(np.int32)
    return call_seeds(seed, n)


class ExportedModel:
    """A loaded SavedModel of :func:`export_model`; ``run`` returns numpy arrays."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        meta_path = self.path / "assets" / META_FILE
        if not (self.path / "saved_model.pb").exists() or not meta_path.exists():
            raise FileNotFoundError(f"{self.path} is not an exported irisml-tf model (needs saved_model.pb "
                                    f"and assets/{META_FILE}; make one with `irisml-tf export RUN_DIR OUT_DIR`)")
        self.meta = ModelMeta.from_json(json.loads(meta_path.read_text()))
        self.bands = self.meta.bands
        self.param_names = self.meta.param_names
        self.run_dir = self.path / "assets" / "run"
        self._fn = None  # the graph, loaded on the first run()
        self._physics: dict = {}

    @property
    def observation(self):
        """The run's resolved :class:`~irisml_tf.data.observation.ObservationConfig`."""
        return self.meta.observation

    def physics(self, grid: str | Path | None = None):
        """(Simulator, Prior) the model was trained with: its grid (default: the shipped one; its
        sha256 must match the export's) and the run's prior. Built once per grid."""
        from irisml_tf.physics.grid import load_grid
        from irisml_tf.physics.prior import Prior
        from irisml_tf.physics.simulator import Simulator

        key = str(grid)
        if key not in self._physics:
            g = load_grid(grid)
            if g.sha256 != self.meta.grid_sha256:
                raise ValueError(f"grid {grid or 'shipped'} (sha256 {g.sha256[:12]}…) is not the grid the model "
                                 f"was exported with (sha256 {self.meta.grid_sha256[:12]}…)")
            self._physics[key] = Simulator(g), Prior(self.meta.config["prior"], g)
        return self._physics[key]

    def run(self, band_index, mag, mag_err, num_samples: int, seed=0) -> dict[str, np.ndarray]:
        """Posterior of a batch (see the module docstring for shapes). Same seed, same numbers.
        ``seed``: per-star seeds int32 [B, 2] (a star's draws depend on its own seed only), or an
        int or two ints, from which star i of the call gets a seed
        (:func:`irisml_tf.rowseed.call_seeds`)."""
        band_index = np.asarray(band_index, np.int32)
        if band_index.ndim != 2:
            raise ValueError(f"`band_index` must be [B, K], got shape {band_index.shape}")
        num_samples = int(num_samples)
        if not 1 <= num_samples <= self.meta.max_samples:
            raise ValueError(f"`num_samples` must be in 1 … {self.meta.max_samples}, got {num_samples}")
        seeds = _seeds(seed, band_index.shape[0])
        if band_index.shape[0] == 0:
            return self._empty(num_samples)
        if self._fn is None:
            self._fn = tf.saved_model.load(str(self.path)).signatures[SIGNATURE]
        out = self._fn(band_index=tf.constant(band_index), mag=tf.constant(np.asarray(mag, np.float32)),
                       mag_err=tf.constant(np.asarray(mag_err, np.float32)),
                       num_samples=tf.constant(num_samples, tf.int32), seed=tf.constant(seeds))
        return {k: v.numpy() for k, v in out.items()}

    def _empty(self, n: int) -> dict[str, np.ndarray]:
        shapes = {"samples": (0, n, 5), "log_q": (0, n), "log_weights": (0, n), "weights": (0, n)}
        ints = ("outlier_band", "flag_bits", "n_bands")
        return {k: np.zeros(shapes.get(k, (0, 5) if k.endswith(SUMMARY_NAMES) else (0,)),
                            np.int32 if k in ints else np.float32) for k in OUTPUT_KEYS}


def load_model(path: str | Path | None = None) -> ExportedModel:
    """The exported model at ``path`` (default: :func:`default_model_path`)."""
    return ExportedModel(default_model_path() if path is None else path)


_CLEAN_SCRIPT = """
import sys
import numpy as np
import tensorflow as tf
a = np.load(sys.argv[2])
f = tf.saved_model.load(sys.argv[1]).signatures["serving_default"]
out = f(band_index=tf.constant(a["band_index"]), mag=tf.constant(a["mag"]),
        mag_err=tf.constant(a["mag_err"]), num_samples=tf.constant(int(a["num_samples"])),
        seed=tf.constant(a["seed"]))
bad = sorted(m for m in sys.modules if m.startswith(("irisml_tf", "tensorflow_probability")))
np.savez(sys.argv[3], _modules=np.array(bad, dtype=str), **{k: v.numpy() for k, v in out.items()})
"""
#: the weighted quantiles among the outputs and their nominal levels
QUANTILE_LEVELS = dict(zip(SUMMARY_NAMES[:3], DEFAULT_QUANTILES))
#: a draw whose normalised weight is below this is float noise for the quantile check: it may be
#: exactly 0 in one process and 1e-30 in the other, which adds or removes a quantile node
NEGLIGIBLE_WEIGHT = 1e-6
#: outputs that are the importance weights or computed from them: compared with ``weight_rtol``
WEIGHT_OUTPUTS = ("weights", "ess", "efficiency", "khat")


@dataclass(frozen=True)
class ExportCheck:
    """What :func:`check_export` found.

    ``failed``: the output keys not within tolerance. ``max_abs_diff``: the largest
    |library − SavedModel| of each output compared by value. ``level_miss``: for median, p16 and
    p84, the largest distance of the nominal level outside the level interval of the SavedModel's
    value (0 = inside). ``modules``: irisml_tf / TFP modules the clean process imported (must be
    none). ``ok``: nothing failed and no such module.
    """

    failed: tuple[str, ...]
    max_abs_diff: Mapping[str, float]
    level_miss: Mapping[str, float]
    modules: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.failed and not self.modules

    def largest_diff(self) -> tuple[str, float]:
        """(key, value) of the largest ``max_abs_diff``."""
        return max(self.max_abs_diff.items(), key=lambda kv: kv[1])

    def summary(self) -> str:
        """One line: what failed, or the largest differences."""
        key, diff = self.largest_diff()
        miss = max(self.level_miss.values(), default=0.0)
        text = f"largest difference {diff:.2g} in `{key}`; weighted quantiles " + (
            f"{miss:.2g} off their levels" if miss > 0 else "at their levels")
        if self.failed:
            text = f"not within tolerance: {', '.join(self.failed)}; {text}"
        if self.modules:
            text += f"; the TensorFlow-only process imported {', '.join(self.modules)}"
        return text


def check_export(out_dir: str | Path, *, num_stars: int = 8, num_samples: int = 256, seed: int = 0,
                 rtol: float = 1e-3, atol: float = 1e-3, weight_rtol: float = 5e-2,
                 level_tol: float = 1e-3) -> ExportCheck:
    """Load the SavedModel in a fresh Python that imports only TensorFlow (as TF Serving would) and
    compare its outputs on simulated stars with the library's: the exported weights and config
    (``assets/run``) in :func:`~irisml_tf.inference.importance.run_importance_sampling` with the
    XLA simulator. Raises RuntimeError if the clean process fails. The rule
    (:func:`compare_outputs`):

    * by value, every output but the weighted quantiles (draws, log_q, the unweighted q_*
      summaries, chi2, mu, flags, …): |library − SavedModel| ≤ atol + rtol·|library|, with the same
      pattern of non-finite values. Differences come from XLA fusing the library simulator's ops
      (the export runs it without XLA): ~1e-6 relative in the magnitudes and draws. log_weights =
      log p(x|θ)p(θ) − log q is compared for draws of weight > :data:`NEGLIGIBLE_WEIGHT`, relative
      to both terms: the magnitudes' rounding moves log p(x|θ) by ~√χ² · δm/σ, up to ~1e-2 (and
      ~1e-3 of −1e4 for far-off draws). Weights are exp(log_weights) normalised, so they and what
      is computed from them (:data:`WEIGHT_OUTPUTS`: ess, efficiency, khat) differ by up to ~1-2 %
      relative (0.4 % seen in khat, 2 % in a weight of 0.01, on the shipped model, 64 stars × 1024
      draws): relative tolerance weight_rtol. mean and std (weighted sums, continuous in the
      weights) get rtol·q_std more, a tolerance on the draws' scale.
    * by level, the weighted quantiles median, p16, p84: their values jump between draws when a
      weight changes by float noise (a weight 0 in one process and 1e-30 in the other adds a
      quantile node), so no value tolerance works. Instead, with F the library's weighted CDF
      (:func:`~irisml_tf.inference.metrics.pit`: F(t) = Σ w ([x < t] + ½ [x = t]) / Σ w over the
      library's draws x and weights w of that star and parameter), and x₋, x₊ the nearest draws
      below and above the SavedModel's value v (farther than atol + rtol·|v|, the draws' own
      tolerance) whose normalised weight exceeds :data:`NEGLIGIBLE_WEIGHT`, the nominal level
      (0.5, 0.16, 0.84) must lie in [F(x₋) − tol, F(x₊) + tol]; F(x₋) = 0 when no such draw lies
      below, F(x₊) = 1 when none lies above; tol = level_tol plus the total variation distance
      between the two processes' weights of that star (a weighted CDF moves by at most that when
      the weights change, and the weights are checked by value above). The midpoint rule of
      :func:`~irisml_tf.inference.summaries.weighted_quantiles` puts draw i at level F(x_i) and
      interpolates between neighbours, so the library's own quantile always passes, and skipping
      light or nearby draws only widens the interval; a quantile at a wrong level fails once its
      interval (about a draw's weight wide) misses the nominal level by more than level_tol.
    """
    model = ExportedModel(out_dir)
    seed2 = _seeds([seed, 1], num_stars)
    inputs = _check_stars(model, num_stars, seed)
    ref = _library_outputs(model, inputs, num_samples, seed2)
    got, modules = _clean_process_outputs(model.path, inputs, num_samples, seed2)
    return compare_outputs(ref, got, modules=modules, rtol=rtol, atol=atol, weight_rtol=weight_rtol,
                           level_tol=level_tol)


def _check_stars(model: ExportedModel, num_stars: int, seed: int) -> dict[str, np.ndarray]:
    from irisml_tf.data.observation import ObservationModel
    from irisml_tf.data.stream import fixed_set

    sim, prior = model.physics()
    stars = fixed_set(prior, sim, ObservationModel(model.observation, bands=sim.bands), num_stars, seed)
    return {k: np.asarray(stars[k]) for k in ("band_index", "mag", "mag_err")}


def _library_outputs(model: ExportedModel, inputs, num_samples: int, seed2) -> dict[str, np.ndarray]:
    from irisml_tf.inference.importance import run_importance_sampling
    from irisml_tf.rundir import load_posterior

    sim, prior = model.physics()
    out = run_importance_sampling(load_posterior(model.run_dir), sim, prior, inputs, num_samples, seed2,
                                  model.observation.sys_floor)
    return {k: np.asarray(out[k]) for k in OUTPUT_KEYS}


def _clean_process_outputs(path: Path, inputs, num_samples: int, seed2) -> tuple[dict, tuple[str, ...]]:
    """The SavedModel's outputs, computed by a Python that imports only TensorFlow, and the
    irisml_tf / TFP modules it imported anyway."""
    import subprocess
    import sys
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        args, res = Path(tmp) / "in.npz", Path(tmp) / "out.npz"
        np.savez(args, num_samples=num_samples, seed=seed2, **inputs)
        proc = subprocess.run([sys.executable, "-c", _CLEAN_SCRIPT, str(path.resolve()), str(args), str(res)],
                              capture_output=True, text=True, cwd=tmp,
                              env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
        if proc.returncode != 0:
            raise RuntimeError(f"loading {path} in a clean TensorFlow process failed:\n{proc.stderr[-3000:]}")
        got = dict(np.load(res))
    return got, tuple(got.pop("_modules").tolist())


def compare_outputs(ref: Mapping, got: Mapping, *, modules=(), rtol: float = 1e-3, atol: float = 1e-3,
                    weight_rtol: float = 5e-2, level_tol: float = 1e-3) -> ExportCheck:
    """The rule of :func:`check_export`: the library's outputs ``ref`` against the SavedModel's
    ``got`` (dicts of arrays with :data:`OUTPUT_KEYS`)."""
    diffs, misses, failed = {}, {}, []
    for key in OUTPUT_KEYS:
        if key in QUANTILE_LEVELS:
            misses[key] = _largest_level_miss(ref, got, key, rtol, atol)
            close = misses[key] <= level_tol
        else:
            key_rtol = weight_rtol if key in WEIGHT_OUTPUTS else rtol
            diffs[key], close = _value_diff(ref, key, got[key], key_rtol, atol)
        if not close:
            failed.append(key)
    return ExportCheck(failed=tuple(failed), max_abs_diff=diffs, level_miss=misses, modules=tuple(modules))


def _value_diff(ref: Mapping, key: str, got, rtol: float, atol: float) -> tuple[float, bool]:
    """(largest |ref − got|, whether every entry is within tolerance) of one output."""
    r, g = np.asarray(ref[key], np.float64), np.asarray(got, np.float64)
    if r.shape != g.shape:
        return float("inf"), False
    finite = np.isfinite(r) & np.isfinite(g)
    tol = atol + rtol * np.abs(r)
    if key == "log_weights":  # = log p(x|θ)p(θ) − log q: rounding scales with both terms
        finite &= np.asarray(ref["weights"]) > NEGLIGIBLE_WEIGHT
        log_q = np.abs(np.asarray(ref["log_q"], np.float64))
        tol = atol + rtol * (np.abs(r + log_q) + log_q)
    diff = np.abs(r[finite] - g[finite])
    if key in ("mean", "std"):  # weighted sums: on the draws' scale
        tol = tol + rtol * np.asarray(ref["q_std"])
    same_pattern = np.array_equal(np.isfinite(r), np.isfinite(g))
    return float(np.max(diff, initial=0.0)), same_pattern and bool(np.all(diff <= tol[finite]))


def _largest_level_miss(ref: Mapping, got: Mapping, key: str, rtol: float, atol: float) -> float:
    """Largest :func:`quantile_level_miss` of one weighted-quantile output beyond the total
    variation distance of the two weight vectors (inf if its shape or pattern of NaN rows differs
    from the library's)."""
    r, g = np.asarray(ref[key]), np.asarray(got[key], np.float64)
    finite = np.isfinite(g)
    same_weights_shape = np.shape(ref["weights"]) == np.shape(got["weights"])
    if r.shape != g.shape or not same_weights_shape or not np.array_equal(np.isfinite(r), finite):
        return float("inf")
    g = np.where(finite, g, 0.0)
    miss = quantile_level_miss(ref["samples"], ref["weights"], g, QUANTILE_LEVELS[key],
                               margin=atol + rtol * np.abs(g))
    excess = np.maximum(miss - _weights_distance(ref["weights"], got["weights"])[:, None], 0.0)
    return float(np.max(excess[finite], initial=0.0))


def _weights_distance(ref_weights, got_weights) -> np.ndarray:
    """Total variation distance [B] of two processes' normalised weights per star (NaN-safe: a
    row without usable weight counts 0): a weighted CDF moves by at most this when the weights
    change, so a quantile exact under one process's weights is that close under the other's."""
    w = [np.nan_to_num(np.asarray(x, np.float64), nan=0.0, posinf=0.0) for x in (ref_weights, got_weights)]
    w = [x / np.where(x.sum(1, keepdims=True) > 0, x.sum(1, keepdims=True), 1.0) for x in w]
    return 0.5 * np.abs(w[0] - w[1]).sum(1)


def quantile_level_miss(samples, weights, values, level: float, *, margin=0.0,
                        negligible: float = NEGLIGIBLE_WEIGHT) -> np.ndarray:
    """How far (in level) ``level`` lies outside the level interval [F(x₋), F(x₊)] of ``values``
    [B, D] under the weighted draws ``samples`` [B, N, D], ``weights`` [B, N]: 0 inside, NaN for
    rows without usable weight. F is :func:`~irisml_tf.inference.metrics.pit`; x₋ < value − margin
    and x₊ > value + margin are the nearest draws whose normalised weight exceeds ``negligible``
    (see :func:`check_export`). ``margin`` (scalar or [B, D]): how far the compared draws may be
    apart, so that a value at a draw (a clamped quantile) stays at it."""
    from irisml_tf.inference.metrics import pit

    x = np.asarray(samples, np.float64)
    w = np.asarray(weights, np.float64)
    w = np.where(np.isfinite(w) & (w > 0), w, 0.0)
    total = w.sum(axis=1, keepdims=True)
    heavy = (w > negligible * np.where(total > 0, total, 1.0))[..., None]  # [B, N, 1]
    v = np.asarray(values, np.float64)[:, None, :]
    eps = np.broadcast_to(np.asarray(margin, np.float64), v.shape[::2])[:, None, :]
    below = np.max(np.where(heavy & (x < v - eps), x, -np.inf), axis=1)  # −inf: none below, F = 0
    above = np.min(np.where(heavy & (x > v + eps), x, np.inf), axis=1)  # +inf: none above, F = 1
    lo, hi = pit(x, below, w), pit(x, above, w)
    return np.maximum(lo - level, 0.0) + np.maximum(level - hi, 0.0)
