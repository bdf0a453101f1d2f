"""The exported model: a SavedModel whose one signature runs the whole posterior in the graph.

``export_model(run_dir, out_dir)`` writes a SavedModel with the signature ``serving_default``:

  inputs   band_index int32 [B, K] (−1 pads, any order), mag float32 [B, K], mag_err float32 [B, K],
           num_samples int32 [] (draws returned per star, clipped to 1 … max_samples),
           seed int32 [B, 2] (one stateless seed per star: a star's result depends on its own
           seed, not on the rows it shares a call with), target_ess float32 [] (the engine stops
           a star once its ESS reaches it), max_draws int32 [] (draw budget per star, at most the
           engine's ``max_draws`` fixed at export), prior_params float32 [21] (the prior, in the layout
           of ``prior_param_names``; the training prior's values are ``prior_params`` in
           assets/irisml.json), av_prior, av_prior_err, av_max float32 [B] (per-star A_V priors,
           NaN = none: a Gaussian on A_V truncated to the support, an upper bound),
           parallax, parallax_error float32 [B] (mas, NaN = none) and parallax_zero_point
           float32 [] (mas, subtracted from parallax; Gaia DR3: −0.017).
  outputs  samples [B, N, 5] (teff, logg, mh, av, rv in physical units, resampled from the
           weighted draws) and weights [B, N] (1/N each; 0 for a star without weight);
           ess, efficiency, khat, log_evidence, chi2, chi2_pvalue, mu [B]; n_draws, rounds,
           n_target_evals, n_modes, outlier_band, flag_bits, n_bands int32 [B]; converged bool
           [B]; weighted summaries median, p16, p84, mean, std [B, 5] over all weighted draws,
           and the flow's own (round 0, unweighted) q_median … q_std [B, 5]; with a parallax,
           derived_median, derived_p16, derived_p84 [B, 4] of distance (pc), radius (R☉), mass
           (M☉), luminosity (L☉) (NaN without; the mass prior is ``mass_prior`` in irisml.json).

The engine is :func:`irisml_tf.inference.engine.run_engine` (per-star adaptive importance
sampling); its static settings (``engine`` in assets/irisml.json: the draw budget max_draws, the
round size, …) are fixed at export. Flow sampling, THE simulator (grid and extinction tables as
graph constants, no XLA), prior, likelihood, the fits, PSIS, summaries and flags are all graph
ops: TF Serving, ``saved_model_cli run`` and ``tf.saved_model.load`` in a process without
irisml_tf or TFP run it. Entries whose band index is out of range, or whose magnitude or error is
not finite, or whose error is ≤ 0, count as pads. ``assets/irisml.json`` holds what a client
needs besides the graph (band order, parameter names, the grid's sha256, the run's config — its
``observation`` section has min_bands, the error range and sys_floor —, the engine settings, the
training prior's parameter vector and training record); :func:`load_model` reads both.
``assets/run/`` is the run's config.yaml and weights:
``irisml_tf.rundir.load_posterior(OUT/"assets"/"run")`` rebuilds the library model
(``ExportedModel.run_dir``).
"""
from __future__ import annotations

import functools
import json
import math
import os
import shutil
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
import tensorflow as tf

from irisml_tf.inference.summaries import SUMMARY_NAMES
from irisml_tf.physics.parallax import DEFAULT_ZERO_POINT, MassPrior

__all__ = ["export_model", "load_model", "ExportedModel", "ModelMeta", "TrainingRecord",
           "default_model_path", "check_target_ess", "check_export", "compare_outputs", "ExportCheck", "SIGNATURE",
           "OUTPUT_KEYS", "META_FILE", "EXACT_OUTPUTS", "ROUND_OUTPUTS", "POSTERIOR_OUTPUTS"]

SIGNATURE = "serving_default"
META_FILE = "irisml.json"
OUTPUT_KEYS = (("samples", "weights", "ess", "efficiency", "khat", "log_evidence", "n_draws", "rounds",
                "n_target_evals", "n_modes", "converged", "chi2", "chi2_pvalue", "mu", "outlier_band",
                "flag_bits", "n_bands")
               + SUMMARY_NAMES + tuple(f"q_{k}" for k in SUMMARY_NAMES)
               + ("derived_median", "derived_p16", "derived_p84"))
_SPEC = [tf.TensorSpec([None, None], tf.int32, name="band_index"),
         tf.TensorSpec([None, None], tf.float32, name="mag"),
         tf.TensorSpec([None, None], tf.float32, name="mag_err"),
         tf.TensorSpec([], tf.int32, name="num_samples"),
         tf.TensorSpec([None, 2], tf.int32, name="seed"),
         tf.TensorSpec([], tf.float32, name="target_ess"),
         tf.TensorSpec([], tf.int32, name="max_draws"),
         tf.TensorSpec([None], tf.float32, name="prior_params"),
         tf.TensorSpec([None], tf.float32, name="av_prior"),
         tf.TensorSpec([None], tf.float32, name="av_prior_err"),
         tf.TensorSpec([None], tf.float32, name="av_max"),
         tf.TensorSpec([None], tf.float32, name="parallax"),
         tf.TensorSpec([None], tf.float32, name="parallax_error"),
         tf.TensorSpec([], tf.float32, name="parallax_zero_point")]
_INTS = ("n_draws", "rounds", "n_target_evals", "n_modes", "outlier_band", "flag_bits", "n_bands")


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
    engine: Mapping = field(default_factory=dict)  # AdaptiveOptions fixed at export
    prior_param_names: tuple[str, ...] = ()
    prior_params: tuple[float, ...] = ()  # the training prior, for clients that send none
    mass_prior: Mapping = field(default_factory=dict)  # the parallax term's MassPrior (see mass_model)
    run_dir: str = ""
    signature: str = SIGNATURE
    irisml_tf_version: str = ""
    tensorflow_version: str = ""
    format: int = 2

    @functools.cached_property
    def engine_options(self):
        """The :class:`~irisml_tf.inference.adaptive.AdaptiveOptions` of the exported graph."""
        from irisml_tf.inference.adaptive import AdaptiveOptions

        d = dict(self.engine)
        d.setdefault("defensive_components", 1)  # exports before it had one defensive t
        d.setdefault("freeze_at", math.inf)  # exports before it weighted every adaptive round
        if "learning_rate" in d:
            d["learning_rate"] = tuple(d["learning_rate"])
        return AdaptiveOptions(**d)

    @functools.cached_property
    def mass_model(self):
        """The :class:`~irisml_tf.physics.parallax.MassPrior` of the exported graph."""
        return MassPrior(**{"table": None, **self.mass_prior})  # exports before the table had none

    def engine_budget(self, target_ess=None, max_draws=None) -> tuple[float, int]:
        """(target ESS, draw budget) of a call: the engine's defaults, or the given values checked
        (ValueError naming the argument; the budget is at most the one fixed at export)."""
        engine = self.engine_options
        target = engine.target_ess if target_ess is None else check_target_ess(target_ess)
        budget = engine.max_draws if max_draws is None else max_draws
        if isinstance(budget, bool) or not isinstance(budget, (int, np.integer)) or \
                not engine.n0 <= budget <= engine.max_draws:
            raise ValueError(f"`max_draws` must be in {engine.n0} … {engine.max_draws} (the model's draw "
                             f"budget, fixed at export), got {max_draws!r}")
        return target, int(budget)

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
        if d.get("format", 1) < 2:
            raise ValueError("this model was exported by an older irisml-tf (flow-only importance "
                             "sampling); re-export it into a NEW directory: `irisml-tf export MODEL/assets/run "
                             "NEW_DIR` (its weights and config are in assets/run)")
        for k in ("bands", "param_names", "lower", "upper", "prior_param_names", "prior_params"):
            known[k] = tuple(known.get(k, ()))
        return cls(training=TrainingRecord(**tr), **known)

    def to_json(self) -> dict:
        d = asdict(self)
        for k in ("bands", "param_names", "lower", "upper", "prior_param_names", "prior_params"):
            d[k] = list(d[k])
        d["engine"] = dict(d["engine"])
        if "learning_rate" in d["engine"]:
            d["engine"]["learning_rate"] = list(d["engine"]["learning_rate"])
        return d


def check_target_ess(value) -> float:
    """A target ESS as float (ValueError unless a number ≥ 1)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.number)) or not 1 <= value < np.inf:
        raise ValueError(f"`target_ess` must be a number ≥ 1, got {value!r}")
    return float(value)


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
    def __init__(self, posterior, simulator, prior, sys_floor: float, max_samples: int, engine, mass_prior):
        super().__init__(name="irisml")
        self.posterior, self.simulator, self.prior = posterior, simulator, prior
        # the C++ loader (TF Serving, saved_model_cli) only finds variables tracked as tf.Variables
        self._weights = [v.value for v in posterior.variables]
        self._sys_floor, self._max_samples, self._engine = float(sys_floor), int(max_samples), engine
        self._mass_prior = mass_prior

    @tf.function(input_signature=_SPEC)
    def serve(self, band_index, mag, mag_err, num_samples, seed, target_ess, max_draws, prior_params, av_prior,
              av_prior_err, av_max, parallax, parallax_error, parallax_zero_point):
        from irisml_tf.inference.engine import run_engine

        n = tf.clip_by_value(num_samples, 1, self._max_samples)
        out = run_engine(self.posterior, self.simulator, self.prior,
                         {"band_index": band_index, "mag": mag, "mag_err": mag_err}, seed, self._sys_floor,
                         options=self._engine, num_samples=n, target_ess=tf.maximum(target_ess, 1.0),
                         max_draws=max_draws,
                         prior_params=prior_params, av_prior=av_prior, av_prior_err=av_prior_err,
                         av_max=av_max, plx=parallax - parallax_zero_point, plx_err=parallax_error,
                         mass_prior=self._mass_prior)
        return {k: out[k] for k in OUTPUT_KEYS}


def _meta(run_dir: Path, config: dict, simulator, prior, max_samples: int, engine, mass_prior) -> ModelMeta:
    from importlib.metadata import version

    from irisml_tf.inference.flags import FLAG_BITS
    from irisml_tf.physics.prior import PRIOR_PARAM_NAMES
    from irisml_tf.physics.simulator import PARAM_NAMES

    metrics_path = run_dir / "metrics.json"
    metrics = json.loads(metrics_path.read_text()) if metrics_path.exists() else {}
    return ModelMeta(
        irisml_tf_version=version("irisml-tf"), tensorflow_version=tf.__version__,
        bands=tuple(simulator.bands), param_names=tuple(PARAM_NAMES),
        lower=tuple(float(v) for v in prior.lower), upper=tuple(float(v) for v in prior.upper),
        max_samples=int(max_samples), flag_bits=dict(FLAG_BITS), grid_sha256=simulator.grid.sha256,
        run_dir=str(run_dir), config=config, engine=asdict(engine),
        prior_param_names=PRIOR_PARAM_NAMES, prior_params=tuple(float(v) for v in prior.params),
        mass_prior=asdict(mass_prior),
        training=TrainingRecord(**{k: metrics.get(k) for k in TrainingRecord.__dataclass_fields__}))


def export_model(run_dir: str | Path, out_dir: str | Path, *, max_samples: int = 20000,
                 weights: str | Path | None = None, overwrite: bool = False, engine=None) -> Path:
    """Write the SavedModel of a training run (its final weights, or the latest checkpoint).
    ``engine``: the :class:`~irisml_tf.inference.adaptive.AdaptiveOptions` fixed in the graph
    (default: their defaults; ``target_ess`` stays a per-call input)."""
    from irisml_tf.inference.adaptive import AdaptiveOptions
    from irisml_tf.physics.prior import Prior
    from irisml_tf.physics.simulator import Simulator
    from irisml_tf.rundir import load_posterior
    from irisml_tf.training.config import load_config

    run_dir, out_dir = Path(run_dir), Path(out_dir)
    if not (run_dir / "config.yaml").exists():
        raise FileNotFoundError(f"{run_dir} is not a training run directory (no config.yaml)")
    if max_samples < 1:
        raise ValueError(f"`max_samples` must be >= 1, got {max_samples}")
    if run_dir.resolve().is_relative_to(out_dir.resolve()):
        raise ValueError(f"{out_dir} holds the run being exported ({run_dir}): export into another directory")
    if out_dir.exists():
        if not overwrite:
            raise FileExistsError(f"{out_dir} exists; pass overwrite=True (CLI: --overwrite) to replace it")
        shutil.rmtree(out_dir)
    config = load_config(run_dir / "config.yaml")
    posterior = load_posterior(run_dir, weights)
    simulator = Simulator(jit_compile=False)
    prior = Prior(config["prior"], simulator.grid)
    engine = engine or AdaptiveOptions()
    mass_prior = MassPrior()  # the graph's and irisml.json's
    module = _Serving(posterior, simulator, prior, config["observation"]["sys_floor"], max_samples, engine,
                      mass_prior)
    # no custom-gradient tracing: serving never differentiates, and tracing the engine's many
    # gradient functions made the save several times slower
    tf.saved_model.save(module, str(out_dir), signatures={SIGNATURE: module.serve},
                        options=tf.saved_model.SaveOptions(experimental_custom_gradients=False))
    # the run itself (config + weights) rides along, so the library can rebuild the same model
    (out_dir / "assets" / "run").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(run_dir / "config.yaml", out_dir / "assets" / "run" / "config.yaml")
    if (run_dir / "metrics.json").exists():  # the training record survives a re-export from assets/run
        shutil.copyfile(run_dir / "metrics.json", out_dir / "assets" / "run" / "metrics.json")
    posterior.save_weights(str(out_dir / "assets" / "run" / "final.weights.h5"))
    meta = _meta(run_dir, config, simulator, prior, max_samples, engine, mass_prior)
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
        self._posterior = None

    @property
    def observation(self):
        """The run's resolved :class:`~irisml_tf.data.observation.ObservationConfig`."""
        return self.meta.observation

    def posterior(self):
        """The library model with the exported weights (``assets/run``), built once."""
        from irisml_tf.rundir import load_posterior

        if self._posterior is None:
            self._posterior = load_posterior(self.run_dir)
        return self._posterior

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

    def run(self, band_index, mag, mag_err, num_samples: int, seed=0, *, target_ess: float | None = None,
            max_draws: int | None = None, prior_params=None, av_prior=None, av_prior_err=None,
            av_max=None, parallax=None, parallax_error=None,
            parallax_zero_point: float = DEFAULT_ZERO_POINT) -> dict[str, np.ndarray]:
        """Posterior of a batch (see the module docstring for shapes). Same seed, same numbers.

        ``seed``: per-star seeds int32 [B, 2] (a star's result depends on its own seed only), or an
        int or two ints, from which star i of the call gets a seed
        (:func:`irisml_tf.rowseed.call_seeds`). ``target_ess``: default the engine's; ``max_draws``:
        draw budget per star, default (and at most) the engine's. ``prior_params``:
        the prior's parameter vector (:meth:`irisml_tf.physics.prior.UserPrior.params`; default the
        training prior). ``av_prior``, ``av_prior_err``, ``av_max``: per-star arrays [B] (NaN = none).
        ``parallax``, ``parallax_error``: per-star arrays [B] in mas (NaN = none), the zero point
        ``parallax_zero_point`` (mas) is subtracted in the graph.
        """
        band_index = np.asarray(band_index, np.int32)
        if band_index.ndim != 2:
            raise ValueError(f"`band_index` must be [B, K], got shape {band_index.shape}")
        num_samples = int(num_samples)
        if not 1 <= num_samples <= self.meta.max_samples:
            raise ValueError(f"`num_samples` must be in 1 … {self.meta.max_samples}, got {num_samples}")
        b = band_index.shape[0]
        seeds = _seeds(seed, b)
        target, budget = self.meta.engine_budget(target_ess, max_draws)
        params = np.asarray(self.meta.prior_params if prior_params is None else prior_params, np.float32)
        if params.shape != (len(self.meta.prior_param_names),):
            raise ValueError(f"`prior_params` must hold {len(self.meta.prior_param_names)} numbers, "
                             f"got shape {params.shape}")
        av = {k: _per_star(v, b, k) for k, v in
              (("av_prior", av_prior), ("av_prior_err", av_prior_err), ("av_max", av_max),
               ("parallax", parallax), ("parallax_error", parallax_error))}
        if b == 0:
            return self._empty(num_samples)
        if self._fn is None:
            self._fn = _signature(self.path.resolve(), (self.path / "saved_model.pb").stat().st_mtime_ns)
        out = self._fn(band_index=tf.constant(band_index), mag=tf.constant(np.asarray(mag, np.float32)),
                       mag_err=tf.constant(np.asarray(mag_err, np.float32)),
                       num_samples=tf.constant(num_samples, tf.int32), seed=tf.constant(seeds),
                       target_ess=tf.constant(target, tf.float32), max_draws=tf.constant(budget, tf.int32),
                       prior_params=tf.constant(params),
                       parallax_zero_point=tf.constant(parallax_zero_point, tf.float32),
                       **{k: tf.constant(v) for k, v in av.items()})
        return {k: v.numpy() for k, v in out.items()}

    def _empty(self, n: int) -> dict[str, np.ndarray]:
        shapes = {"samples": (0, n, 5), "weights": (0, n), "derived_median": (0, 4), "derived_p16": (0, 4),
                  "derived_p84": (0, 4)}
        dtypes = {k: np.int32 for k in _INTS} | {"converged": bool}
        return {k: np.zeros(shapes.get(k, (0, 5) if k.endswith(SUMMARY_NAMES) else (0,)), dtypes.get(k, np.float32))
                for k in OUTPUT_KEYS}


@functools.lru_cache(maxsize=4)
def _signature(path: Path, mtime_ns: int):
    """The loaded signature of the SavedModel at ``path``, once per process (per file version:
    ``mtime_ns``). Its first call builds and optimises the engine's graph (~10 s), so every
    ExportedModel of the same export in a process shares one."""
    return tf.saved_model.load(str(path)).signatures[SIGNATURE]


def _per_star(values, b: int, name: str) -> np.ndarray:
    """A per-star input as float32 [b] (None = NaN: none)."""
    if values is None:
        return np.full(b, np.nan, np.float32)
    v = np.asarray(values, np.float32)
    if v.shape != (b,):
        raise ValueError(f"`{name}` must hold one value per star ({b}), got shape {v.shape}")
    return v


def load_model(path: str | Path | None = None) -> ExportedModel:
    """The exported model at ``path`` (default: :func:`default_model_path`)."""
    return ExportedModel(default_model_path() if path is None else path)


_CLEAN_SCRIPT = """
import sys
import numpy as np
import tensorflow as tf
a = np.load(sys.argv[2])
f = tf.saved_model.load(sys.argv[1]).signatures["serving_default"]
out = f(**{k: tf.constant(a[k]) for k in a.files})
bad = sorted(m for m in sys.modules if m.startswith(("irisml_tf", "tensorflow_probability")))
np.savez(sys.argv[3], _modules=np.array(bad, dtype=str), **{k: v.numpy() for k, v in out.items()})
"""
#: outputs that must agree exactly: the engine's decisions (draws, rounds, modes, stop, flags)
EXACT_OUTPUTS = ("flag_bits", "outlier_band", "n_bands")
#: below this ESS (in both processes) a star is not compared: its weights sit on few draws, and two
#: processes on different trajectories disagree beyond Monte-Carlo error (an untrained model)
WEAK_ESS = 200.0
#: the engine's decisions: a star may stop one round apart (its ESS crossed the target in one process)
ROUND_OUTPUTS = ("n_draws", "rounds", "n_modes", "converged")
#: weighted summaries and draws: compared per star on the posterior's own scale (fraction of its std)
POSTERIOR_OUTPUTS = ("median", "p16", "p84", "mean", "std", "samples")


@dataclass(frozen=True)
class ExportCheck:
    """What :func:`check_export` found.

    ``failed``: the output keys not within tolerance. ``max_diff``: the largest difference of each
    output, in the unit its rule uses (value; fraction of the posterior std; ESS ratio).
    ``modules``: irisml_tf / TFP modules the clean process imported (must be none). ``ok``:
    nothing failed and no such module.
    """

    failed: tuple[str, ...]
    max_diff: Mapping[str, float]
    modules: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.failed and not self.modules

    def summary(self) -> str:
        """One line: what failed, or the largest posterior difference."""
        post = {k: v for k, v in self.max_diff.items() if k in POSTERIOR_OUTPUTS}
        key, diff = max(post.items(), key=lambda kv: kv[1], default=("median", 0.0))
        text = f"posterior summaries within {diff:.2g} σ (largest in `{key}`)"
        if self.failed:
            text = f"not within tolerance: {', '.join(self.failed)}; {text}"
        if self.modules:
            text += f"; the TensorFlow-only process imported {', '.join(self.modules)}"
        return text


def check_export(out_dir: str | Path, *, num_stars: int = 8, num_samples: int = 256, seed: int = 0,
                 rtol: float = 1e-3, atol: float = 1e-3, sigma_tol: float = 0.4,
                 ess_ratio: float = 2.0, khat_tol: float = 0.2) -> ExportCheck:
    """Load the SavedModel in a fresh Python that imports only TensorFlow (as TF Serving would) and
    compare its outputs on simulated stars with the library's
    (:func:`~irisml_tf.inference.engine.run_engine` on the exported weights, engine settings and
    non-XLA simulator, in a tf.function). Raises RuntimeError if the clean process fails. The rule
    (:func:`compare_outputs`):

    The two processes round floats differently (graph optimisation, op fusion), by ~1e-6 relative
    in the magnitudes; the log target moves by up to ~1e-2 nats, the weights by ~1 %, and the
    adaptive engine feeds the weights back into its next proposal, so draws drift apart round by
    round while the posterior they represent does not. Measured on the shipped model (8 stars,
    256 draws): weighted summaries within 0.4 σ of each other (the largest for a star the two
    processes stopped after different rounds), ESS within a factor 1.5. Hence:

    * the engine's decisions (:data:`ROUND_OUTPUTS`) are random quantities of the run, not
      functions of the star: each round's proposal is fitted to the previous draws, so round-off
      (scaled by 1/(2h) in the mode search's central-difference Hessian) sends the two processes on
      different trajectories (measured on the shipped model: rounds 16/14/20/11/5/5/6/8 vs
      16/10/20/10/5/5/6/6, one star at the budget with ESS 1042 vs 720). Rounds and modes agree
      within half their size (at least 1), convergence for at least 3 stars in 4, draw counts
      where the rounds agree; exactly (:data:`EXACT_OUTPUTS`): n_bands for every star, the flags and outlier band for
      stars "settled" (at target in both processes after the same rounds);
    * by value (atol + rtol·|library|): the flow's round-0 summaries ``q_*``;
    * on the posterior's scale: ``median, p16, p84, mean`` within ``sigma_tol`` of the library's
      weighted std per star and parameter, ``std`` within ``sigma_tol`` relative, and the mean of
      the N returned ``samples`` within ``sigma_tol`` σ + 3 σ/√N of the library's weighted mean (a
      quantile at a wrong level, swapped p16/p84 or a draw off the posterior moves them by ≳ 1 σ;
      0.4: measured on the shipped model, a settled star with a 1900 K wide, skewed Teff posterior
      (a teff–A_V ridge) had its Teff p84 0.31 σ apart at ESS ~1000 in both — the tail of a long
      ridge rests on fewer draws than the ESS says).
      A star not settled gets 1 σ: its tails rest on a few heavy draws
      (measured: a Teff p84 0.82 σ apart for a star at ESS 590 vs 371 after its 19 256 draws);
    * ``n_target_evals`` (the mode search stops each start on a float threshold) within a factor
      ``ess_ratio``; ``ess`` and ``efficiency`` too, and ``khat`` within ``khat_tol``, for settled
      stars (a star that ran out of draws has the ESS of its last round, on a few heavy draws:
      measured on an untrained tiny model, 315 vs 45 with k̂ 0.2 vs 0.8 for the same star);
    * a star whose ESS is below :data:`WEAK_ESS` in both processes (an untrained model's) has no
      posterior to compare: its summaries, ESS and k̂ are not compared;
    * ``log_evidence`` within 0.1 nat + rtol, and ``chi2``, ``mu``, ``chi2_pvalue`` (of the best
      returned draw, itself random) within 2 + 0.2·χ², 0.5 mag and 0.2, for stars that reached
      their target ESS (log_evidence too: with a few heavy draws it is as noisy as they are).
    """
    model = ExportedModel(out_dir)
    seed2 = _seeds([seed, 1], num_stars)
    inputs = _check_stars(model, num_stars, seed)
    args = _signature_inputs(model, inputs, num_samples, seed2)
    ref = _library_outputs(model, args)
    got, modules = _clean_process_outputs(model.path, args)
    return compare_outputs(ref, got, modules=modules, rtol=rtol, atol=atol, sigma_tol=sigma_tol,
                           ess_ratio=ess_ratio, khat_tol=khat_tol)


def _check_stars(model: ExportedModel, num_stars: int, seed: int) -> dict[str, np.ndarray]:
    from irisml_tf.data.observation import ObservationModel
    from irisml_tf.data.stream import fixed_set

    sim, prior = model.physics()
    stars = fixed_set(prior, sim, ObservationModel(model.observation, bands=sim.bands), num_stars, seed)
    return {k: np.asarray(stars[k]) for k in ("band_index", "mag", "mag_err")}


def _signature_inputs(model: ExportedModel, inputs, num_samples: int, seed2) -> dict[str, np.ndarray]:
    """Every input of the signature for the check: the training prior, no per-star A_V prior."""
    b = len(seed2)
    nan = np.full(b, np.nan, np.float32)
    return {**inputs, "num_samples": np.int32(num_samples), "seed": np.asarray(seed2, np.int32),
            "target_ess": np.float32(model.meta.engine_options.target_ess),
            "max_draws": np.int32(model.meta.engine_options.max_draws),
            "prior_params": np.asarray(model.meta.prior_params, np.float32),
            "av_prior": nan, "av_prior_err": nan, "av_max": nan, "parallax": nan, "parallax_error": nan,
            "parallax_zero_point": np.float32(0.0)}


def _library_outputs(model: ExportedModel, args: Mapping) -> dict[str, np.ndarray]:
    """The library's :func:`~irisml_tf.inference.engine.run_engine` on the exported weights, in a
    tf.function with the export's (non-XLA) simulator."""
    from irisml_tf.inference.engine import run_engine
    from irisml_tf.physics.simulator import Simulator

    xla_sim, prior = model.physics()
    sim = Simulator(xla_sim.grid, jit_compile=False)
    posterior = model.posterior()
    a = {k: tf.constant(v) for k, v in args.items()}

    @tf.function
    def run():
        return run_engine(posterior, sim, prior, a, a["seed"], model.observation.sys_floor,
                          options=model.meta.engine_options, num_samples=a["num_samples"],
                          target_ess=a["target_ess"], max_draws=a["max_draws"], prior_params=a["prior_params"],
                          av_prior=a["av_prior"], av_prior_err=a["av_prior_err"], av_max=a["av_max"],
                          plx=a["parallax"] - a["parallax_zero_point"], plx_err=a["parallax_error"],
                          mass_prior=model.meta.mass_model)
    out = run()
    return {k: np.asarray(out[k]) for k in OUTPUT_KEYS}


def _clean_process_outputs(path: Path, args: Mapping) -> tuple[dict, tuple[str, ...]]:
    """The SavedModel's outputs, computed by a Python that imports only TensorFlow, and the
    irisml_tf / TFP modules it imported anyway."""
    import subprocess
    import sys
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        where, res = Path(tmp) / "in.npz", Path(tmp) / "out.npz"
        np.savez(where, **args)
        proc = subprocess.run([sys.executable, "-c", _CLEAN_SCRIPT, str(path.resolve()), str(where), str(res)],
                              capture_output=True, text=True, cwd=tmp,
                              env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
        if proc.returncode != 0:
            raise RuntimeError(f"loading {path} in a clean TensorFlow process failed:\n{proc.stderr[-3000:]}")
        got = dict(np.load(res))
    return got, tuple(got.pop("_modules").tolist())


def compare_outputs(ref: Mapping, got: Mapping, *, modules=(), rtol: float = 1e-3, atol: float = 1e-3,
                    sigma_tol: float = 0.4, ess_ratio: float = 2.0, khat_tol: float = 0.2) -> ExportCheck:
    """The rule of :func:`check_export`: the library's outputs ``ref`` against the SavedModel's
    ``got`` (dicts of arrays with :data:`OUTPUT_KEYS`)."""
    stars = _stars(ref, got)
    diffs, failed = {}, []
    for key in OUTPUT_KEYS:
        r, g = np.asarray(ref[key], np.float64), np.asarray(got[key], np.float64)
        if r.shape != g.shape or not np.array_equal(np.isfinite(r), np.isfinite(g)):
            diffs[key], close = float("inf"), False
        else:
            diffs[key], close = _diff(key, r, g, ref, got, stars, rtol, atol, sigma_tol, ess_ratio, khat_tol)
        if not close:
            failed.append(key)
    return ExportCheck(failed=tuple(failed), max_diff=diffs, modules=tuple(modules))


class _Stars(NamedTuple):
    """Per star, for :func:`_diff`: ``short`` (not settled: not at target in both processes after
    the same rounds; its tails rest on a few heavy draws, or one process had a round more),
    ``weak`` (ESS below :data:`WEAK_ESS` in both: no posterior to compare), ``sd`` (the library's
    posterior std [B, 5], the scale of the summaries)."""

    short: np.ndarray
    weak: np.ndarray
    sd: np.ndarray


def _stars(ref: Mapping, got: Mapping) -> _Stars:
    short = ~(np.asarray(ref["converged"], bool) & np.asarray(got["converged"], bool)
              & (np.asarray(ref["rounds"]) == np.asarray(got["rounds"])))
    weak = np.maximum(np.nan_to_num(np.asarray(ref["ess"], np.float64)),
                      np.nan_to_num(np.asarray(got["ess"], np.float64))) < WEAK_ESS
    sd = np.maximum(np.where(np.isfinite(ref["std"]), ref["std"], 0.0), 1e-12)
    return _Stars(short, weak, sd)


def _diff(key, r, g, ref, got, stars: _Stars, rtol, atol, sigma_tol, ess_ratio, khat_tol) -> tuple[float, bool]:
    """(largest difference, within tolerance) of one output (shapes and NaN patterns equal)."""
    ok = np.isfinite(r)
    r, g = np.where(ok, r, 0.0), np.where(ok, g, 0.0)
    short, weak, sd = stars
    if key in ROUND_OUTPUTS:
        d = np.abs(r - g)
        if key == "n_draws":  # follows the rounds: equal where they are
            same = np.asarray(ref["rounds"]) == np.asarray(got["rounds"])
            return float(d.max(initial=0.0)), bool(np.all(d[same] == 0))
        if key == "converged":
            return float(d.max(initial=0.0)), bool(np.mean(d > 0) <= 0.25)
        return float(d.max(initial=0.0)), bool(np.all(d <= np.maximum(1.0, 0.5 * np.maximum(r, g))))
    if key in EXACT_OUTPUTS:
        d = np.abs(r - g)
        if key != "n_bands":  # from the best returned draw and the weights: strict where settled
            d = np.where(short, 0.0, d)
        return float(d.max(initial=0.0)), bool(np.all(d == 0))
    if key in ("ess", "efficiency", "n_target_evals"):  # the mode search stops on a float threshold
        ratio = np.maximum(r, g) / np.maximum(np.minimum(r, g), 1e-30)
        skip = weak | short if key != "n_target_evals" else weak  # ESS: a short star's last round's
        ratio = np.where((np.maximum(r, g) > 0) & ~skip, ratio, 1.0)
        return float(ratio.max(initial=1.0)), bool(np.all(ratio <= ess_ratio))
    if key in POSTERIOR_OUTPUTS:
        sigma_tol = np.where(weak, np.inf, np.where(short, max(sigma_tol, 1.0), sigma_tol))[:, None]
        if key == "samples":
            mean = np.where(np.isfinite(ref["mean"]), ref["mean"], 0.0)
            n = g.shape[1]
            d = np.abs(g.mean(1) - mean) / sd
            return float(d.max(initial=0.0)), bool(np.all(d <= sigma_tol + 3 / np.sqrt(n)))
        d = np.abs(r - g) / (np.maximum(r, 1e-12) if key == "std" else sd)
        return float(d.max(initial=0.0)), bool(np.all(d <= sigma_tol))
    if key.startswith("derived_"):  # quantiles of the returned draws: on their own spread
        half = 0.5 * np.abs(np.nan_to_num(np.asarray(ref["derived_p84"], np.float64)
                                          - np.asarray(ref["derived_p16"], np.float64)))
        d = np.where(short[:, None], 0.0, np.abs(r - g))
        return float(d.max(initial=0.0)), bool(np.all(d <= sigma_tol * half + atol + rtol * np.abs(r)))
    tol = {"khat": khat_tol, "chi2": 2.0 + 0.2 * np.abs(r), "mu": 0.5, "chi2_pvalue": 0.2,
           "log_evidence": 0.1 + rtol * np.abs(r)}.get(key, atol + rtol * np.abs(r))
    d = np.abs(r - g)
    if key in ("chi2", "mu", "chi2_pvalue", "log_evidence", "khat"):  # a few draws when short
        d = np.where(short | weak, 0.0, d)
    return float(d.max(initial=0.0)), bool(np.all(d <= tol))
