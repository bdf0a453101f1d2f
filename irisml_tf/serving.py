"""The exported model: a SavedModel whose one signature runs the whole posterior in the graph.

``export_model(run_dir, out_dir)`` writes a SavedModel with the signature ``serving_default``:

  inputs   band_index int32 [B, K] (−1 pads, any order), mag float32 [B, K], mag_err float32 [B, K],
           num_samples int32 [] (clipped to 1 … max_samples), seed int32 [2] (stateless)
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
the run's config.yaml and weights: ``irisml_tf.training.driver.load_posterior(OUT/"assets"/"run")``
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

from irisml_tf.inference.summaries import SUMMARY_NAMES

__all__ = ["export_model", "load_model", "ExportedModel", "ModelMeta", "TrainingRecord",
           "default_model_path", "SIGNATURE", "OUTPUT_KEYS", "META_FILE"]

SIGNATURE = "serving_default"
META_FILE = "irisml.json"
OUTPUT_KEYS = (("samples", "log_q", "log_weights", "weights", "ess", "efficiency", "khat", "chi2",
                "chi2_pvalue", "mu", "outlier_band", "flag_bits", "n_bands")
               + SUMMARY_NAMES + tuple(f"q_{k}" for k in SUMMARY_NAMES))
_SPEC = [tf.TensorSpec([None, None], tf.int32, name="band_index"),
         tf.TensorSpec([None, None], tf.float32, name="mag"),
         tf.TensorSpec([None, None], tf.float32, name="mag_err"),
         tf.TensorSpec([], tf.int32, name="num_samples"),
         tf.TensorSpec([2], tf.int32, name="seed")]


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
    def from_json(cls, d: Mapping) -> "ModelMeta":
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
    """$IRISML_TF_MODEL, else the shipped model saved_models/default of this checkout."""
    env = os.environ.get("IRISML_TF_MODEL")
    return Path(env) if env else Path(__file__).resolve().parents[1] / "saved_models" / "default"


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
    from irisml_tf.training.config import load_config
    from irisml_tf.training.driver import load_posterior

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


def _seed(seed) -> np.ndarray:
    seed = np.asarray(seed, np.int64)
    if seed.ndim == 2:  # per-star seeds [B, 2]; this graph takes one [2] per call
        from irisml_tf.rowseed import fold_seeds

        return fold_seeds(seed)
    seed = seed.reshape(-1)
    if seed.size == 1:
        seed = np.array([seed[0], 0])
    if seed.size != 2:
        raise ValueError(f"`seed` must be an int or two ints, got {seed.tolist()}")
    return seed.astype(np.int32)


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
        ``seed``: an int, two ints, or per-star seeds [B, 2] (folded into one per call for now:
        :func:`irisml_tf.rowseed.fold_seeds`)."""
        band_index = np.asarray(band_index, np.int32)
        if band_index.ndim != 2:
            raise ValueError(f"`band_index` must be [B, K], got shape {band_index.shape}")
        num_samples = int(num_samples)
        if not 1 <= num_samples <= self.meta.max_samples:
            raise ValueError(f"`num_samples` must be in 1 … {self.meta.max_samples}, got {num_samples}")
        if np.ndim(seed) == 2 and np.shape(seed)[0] != band_index.shape[0]:
            raise ValueError(f"per-star `seed` must be [B, 2] with B = {band_index.shape[0]}, got {np.shape(seed)}")
        if band_index.shape[0] == 0:
            return self._empty(num_samples)
        if self._fn is None:
            self._fn = tf.saved_model.load(str(self.path)).signatures[SIGNATURE]
        out = self._fn(band_index=tf.constant(band_index), mag=tf.constant(np.asarray(mag, np.float32)),
                       mag_err=tf.constant(np.asarray(mag_err, np.float32)),
                       num_samples=tf.constant(num_samples, tf.int32), seed=tf.constant(_seed(seed)))
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
import json, sys
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


def check_export(out_dir: str | Path, *, num_stars: int = 8, num_samples: int = 256, seed: int = 0,
                 rtol: float = 1e-3, atol: float = 1e-3) -> dict:
    """Load the SavedModel in a fresh Python that imports only TensorFlow (as TF Serving would) and
    compare its outputs on simulated stars with the library: the exported weights and config
    (``assets/run``) in :func:`~irisml_tf.inference.importance.run_importance_sampling` with the
    XLA simulator.

    Float differences come only from XLA fusing the library simulator's ops (the export runs it
    without XLA): ~1e-6 relative. Returns {"ok": bool, "failed": [keys not within rtol/atol],
    "max_abs_diff": {key: value}, "modules": [irisml_tf/TFP modules the clean process imported —
    must be empty]}. Raises RuntimeError if the clean process fails.
    """
    import subprocess
    import sys
    import tempfile

    from irisml_tf.data.observation import ObservationModel
    from irisml_tf.data.stream import fixed_set
    from irisml_tf.inference.importance import run_importance_sampling
    from irisml_tf.training.driver import load_posterior

    model = ExportedModel(out_dir)
    sim, prior = model.physics()
    obs = ObservationModel(model.observation, bands=sim.bands)
    stars = fixed_set(prior, sim, obs, num_stars, seed)
    inputs = {k: stars[k] for k in ("band_index", "mag", "mag_err")}
    seed2 = np.array([seed, 1], np.int32)
    ref = run_importance_sampling(load_posterior(model.run_dir), sim, prior, inputs, num_samples, seed2,
                                  model.observation.sys_floor)
    with tempfile.TemporaryDirectory() as tmp:
        args, res = Path(tmp) / "in.npz", Path(tmp) / "out.npz"
        np.savez(args, num_samples=num_samples, seed=seed2, **inputs)
        proc = subprocess.run([sys.executable, "-c", _CLEAN_SCRIPT, str(Path(out_dir).resolve()), str(args), str(res)],
                              capture_output=True, text=True, cwd=tmp,
                              env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
        if proc.returncode != 0:
            raise RuntimeError(f"loading {out_dir} in a clean TensorFlow process failed:\n{proc.stderr[-3000:]}")
        got = dict(np.load(res))
    modules = got.pop("_modules").tolist()
    diffs, failed = {}, []
    for key in OUTPUT_KEYS:
        r, g = np.asarray(ref[key]), got[key]
        finite = np.isfinite(r) & np.isfinite(g)
        if key == "log_weights":  # far-off samples: log p(x|θ) ~ −1e4, where float32 keeps ~1e-3
            finite &= np.asarray(ref["weights"]) > 1e-6
        same_pattern = np.array_equal(np.isfinite(r), np.isfinite(g))
        diffs[key] = float(np.max(np.abs(r[finite] - g[finite]), initial=0.0))
        tol = atol + rtol * np.abs(r)
        if key in SUMMARY_NAMES:  # weighted: a tiny weight change moves them by ~ the draws' spread
            tol = tol + rtol * np.asarray(ref["q_std"])
        close = same_pattern and bool(np.all(np.abs(r[finite] - g[finite]) <= tol[finite]))
        if not close:
            failed.append(key)
    return {"ok": not failed and not modules, "failed": failed, "max_abs_diff": diffs, "modules": modules}
