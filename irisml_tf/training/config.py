"""Training configuration: defaults ← YAML file ← ``--set key.sub=value`` overrides, validated at
once.

A config has four sections (configs/quick.yaml and configs/default.yaml document every key):

* ``model``: :class:`irisml_tf.model.PosteriorModel` constructor arguments (sizes). ``lower`` /
  ``upper`` (support box) default to the prior's box and ``param_loc`` / ``param_scale``
  (standardisation of the unconstrained parameters) to a fit on prior samples; the resolved config
  saved with a run holds the values actually used.
* ``observation``: :class:`irisml_tf.data.observation.ObservationModel` settings, validated by
  :func:`irisml_tf.data.observation.load_observation_config`.
* ``prior``: validated by :func:`irisml_tf.physics.prior.load_prior_config`.
* ``training``: optimiser, schedule, stream, validation, logging and checkpoint settings
  (:data:`DEFAULT_TRAINING`).

Every problem (unknown key, wrong type, impossible value) raises ValueError naming the key, e.g.
``config key `training.batch_size` must be an integer >= 1, got -4``.
"""
from __future__ import annotations

import copy
import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from irisml_tf.model.posterior import DEFAULT_SIZES
from irisml_tf.workdir import atomic_write
from irisml_tf.yaml_io import load_yaml

__all__ = [
    "DEFAULT_MODEL",
    "DEFAULT_TRAINING",
    "OPERATIONAL_KEYS",
    "SECTIONS",
    "ConfigError",
    "apply_overrides",
    "config_diff",
    "dump_config",
    "load_config",
    "parse_override",
]

#: The ``model`` section: PosteriorModel sizes by default (one source,
#: :data:`irisml_tf.model.posterior.DEFAULT_SIZES`; configs/default.yaml holds the production
#: sizes) and the support box and standardisation, filled in by the run when null.
DEFAULT_MODEL: dict[str, Any] = {
    **DEFAULT_SIZES,
    "made_hidden": list(DEFAULT_SIZES["made_hidden"]),
    "lower": None,
    "upper": None,
    "param_loc": None,
    "param_scale": None,
}

DEFAULT_TRAINING: dict[str, Any] = {
    "batch_size": 256,
    "steps": 20000,
    "learning_rate": 5.0e-4,
    "warmup_steps": 500,
    "final_lr_fraction": 0.01,
    "weight_decay": 1.0e-4,
    "beta_1": 0.9,
    "beta_2": 0.999,
    "clip_norm": 5.0,
    "seed": 1,
    "standardization_samples": 100000,
    "val_size": 4096,
    "val_seed": 2,
    "val_every": 1000,
    "val_batch_size": 1024,
    "val_posterior_stars": 256,
    "val_posterior_samples": 100,
    "calibration_levels": [0.5, 0.68, 0.9, 0.95],
    "corner_samples": 2000,
    "log_every": 50,
    "checkpoint_every": 1000,
    "checkpoint_minutes": 10.0,
    "keep_checkpoints": 3,
}

SECTIONS = ("model", "observation", "prior", "training")

#: training keys that may differ between a run and its resumption (they change neither the
#: model, the data nor the optimisation up to the point of resumption; a new ``steps`` stretches
#: or shortens the cosine schedule from the resumed step on).
OPERATIONAL_KEYS = frozenset({
    "training.steps", "training.val_every", "training.log_every", "training.checkpoint_every",
    "training.checkpoint_minutes", "training.keep_checkpoints", "training.val_batch_size",
    "training.corner_samples",
})

_INT32_MAX = 2 ** 31 - 1


class ConfigError(ValueError):
    """The config is invalid (the message names the key)."""


# -- primitive checks -------------------------------------------------------------------------
def _fail(key: str, msg: str):
    raise ValueError(f"config key `{key}` {msg}")


def _int(key, value, lo=None, hi=None):
    if isinstance(value, bool) or not isinstance(value, int):
        _fail(key, f"must be an integer, got {value!r}")
    if lo is not None and value < lo:
        _fail(key, f"must be an integer >= {lo}, got {value}")
    if hi is not None and value > hi:
        _fail(key, f"must be an integer <= {hi}, got {value}")
    return int(value)


def _float(key, value, lo=None, hi=None, lo_open=False, hi_open=False):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        _fail(key, f"must be a finite number, got {value!r}")
    value = float(value)
    if lo is not None and (value <= lo if lo_open else value < lo):
        _fail(key, f"must be {'>' if lo_open else '>='} {lo}, got {value}")
    if hi is not None and (value >= hi if hi_open else value > hi):
        _fail(key, f"must be {'<' if hi_open else '<='} {hi}, got {value}")
    return value


def _float_list(key, value, length=None, allow_none=True):
    if value is None and allow_none:
        return None
    if not isinstance(value, (list, tuple)):
        _fail(key, f"must be a list of numbers{' or null' if allow_none else ''}, got {value!r}")
    if length is not None and len(value) != length:
        _fail(key, f"must have {length} entries, got {len(value)}")
    return [_float(f"{key}[{i}]", v) for i, v in enumerate(value)]


# -- section validators -----------------------------------------------------------------------
def _check_model(m: dict) -> dict:
    out = dict(m)
    k = "model."
    out["embed_dim"] = _int(k + "embed_dim", m["embed_dim"], 1)
    out["num_heads"] = _int(k + "num_heads", m["num_heads"], 1)
    if out["embed_dim"] % out["num_heads"]:
        _fail(k + "num_heads", f"must divide `model.embed_dim` ({out['embed_dim']}), "
                               f"got {out['num_heads']}")
    out["num_blocks"] = _int(k + "num_blocks", m["num_blocks"], 1)
    out["mlp_dim"] = _int(k + "mlp_dim", m["mlp_dim"], 1)
    out["flow_blocks"] = _int(k + "flow_blocks", m["flow_blocks"], 1)
    hidden = m["made_hidden"]
    if not isinstance(hidden, (list, tuple)) or not hidden:
        _fail(k + "made_hidden", f"must be a non-empty list of layer widths, got {hidden!r}")
    out["made_hidden"] = [_int(f"{k}made_hidden[{i}]", h, 1) for i, h in enumerate(hidden)]
    out["mixture_components"] = _int(k + "mixture_components", m["mixture_components"], 0)
    out["dropout"] = _float(k + "dropout", m["dropout"], 0.0, 1.0, hi_open=True)
    act = m["activation"]
    if not isinstance(act, str):
        _fail(k + "activation", f"must be a Keras activation name, got {act!r}")
    import keras

    try:
        keras.activations.get(act)
    except (ValueError, TypeError):
        _fail(k + "activation", f"is not a Keras activation: {act!r}")
    out["log_scale_bound"] = _float(k + "log_scale_bound", m["log_scale_bound"], 0.0,
                                    lo_open=True)
    from irisml_tf.model.transform import NUM_PARAMS

    for name in ("lower", "upper", "param_loc", "param_scale"):
        out[name] = _float_list(k + name, m[name], NUM_PARAMS)
    if out["lower"] is not None and out["upper"] is not None:
        bad = [i for i in range(NUM_PARAMS) if not out["lower"][i] < out["upper"][i]]
        if bad:
            _fail(k + "lower", f"must lie below `model.upper` entry by entry (entries {bad})")
    if out["param_scale"] is not None and min(out["param_scale"]) <= 0:
        _fail(k + "param_scale", f"entries must be > 0, got {out['param_scale']}")
    if (out["param_loc"] is None) != (out["param_scale"] is None):
        _fail(k + "param_loc", "and `model.param_scale` must be given together (or both null)")
    return out


def _check_training(t: dict) -> dict:
    out = dict(t)
    k = "training."
    out["batch_size"] = _int(k + "batch_size", t["batch_size"], 1)
    out["steps"] = _int(k + "steps", t["steps"], 1)
    out["learning_rate"] = _float(k + "learning_rate", t["learning_rate"], 0.0, lo_open=True)
    out["warmup_steps"] = _int(k + "warmup_steps", t["warmup_steps"], 0, out["steps"])
    out["final_lr_fraction"] = _float(k + "final_lr_fraction", t["final_lr_fraction"], 0.0, 1.0)
    out["weight_decay"] = _float(k + "weight_decay", t["weight_decay"], 0.0)
    out["beta_1"] = _float(k + "beta_1", t["beta_1"], 0.0, 1.0, hi_open=True)
    out["beta_2"] = _float(k + "beta_2", t["beta_2"], 0.0, 1.0, hi_open=True)
    out["clip_norm"] = _float(k + "clip_norm", t["clip_norm"], 0.0, lo_open=True)
    out["seed"] = _int(k + "seed", t["seed"], 0, _INT32_MAX)
    out["standardization_samples"] = _int(k + "standardization_samples",
                                          t["standardization_samples"], 2)
    out["val_size"] = _int(k + "val_size", t["val_size"], 1)
    out["val_seed"] = _int(k + "val_seed", t["val_seed"], 0, _INT32_MAX)
    out["val_every"] = _int(k + "val_every", t["val_every"], 1)
    out["val_batch_size"] = _int(k + "val_batch_size", t["val_batch_size"], 1)
    out["val_posterior_stars"] = _int(k + "val_posterior_stars", t["val_posterior_stars"], 1,
                                      out["val_size"])
    out["val_posterior_samples"] = _int(k + "val_posterior_samples",
                                        t["val_posterior_samples"], 2)
    levels = t["calibration_levels"]
    if not isinstance(levels, (list, tuple)) or not levels:
        _fail(k + "calibration_levels", f"must be a non-empty list of levels in (0, 1), "
                                        f"got {levels!r}")
    out["calibration_levels"] = [_float(f"{k}calibration_levels[{i}]", v, 0.0, 1.0,
                                        lo_open=True, hi_open=True)
                                 for i, v in enumerate(levels)]
    out["corner_samples"] = _int(k + "corner_samples", t["corner_samples"], 10)
    out["log_every"] = _int(k + "log_every", t["log_every"], 1)
    out["checkpoint_every"] = _int(k + "checkpoint_every", t["checkpoint_every"], 1)
    out["checkpoint_minutes"] = _float(k + "checkpoint_minutes", t["checkpoint_minutes"], 0.0)
    out["keep_checkpoints"] = _int(k + "keep_checkpoints", t["keep_checkpoints"], 1)
    return out


def _merge_known(base: dict, user: Mapping, section: str) -> dict:
    out = copy.deepcopy(base)
    for key, value in user.items():
        if key not in base:
            raise ValueError(f"config key `{section}.{key}` is unknown; known keys of "
                             f"`{section}`: {', '.join(base)}")
        out[key] = value
    return out


def _validate(user: Mapping) -> dict:
    if not isinstance(user, Mapping):
        raise ValueError(f"a config must be a mapping with sections {', '.join(SECTIONS)}, "
                         f"got {type(user).__name__}")
    for section, value in user.items():
        if section not in SECTIONS:
            raise ValueError(f"config key `{section}` is unknown; known sections: "
                             f"{', '.join(SECTIONS)}")
        if value is not None and not isinstance(value, Mapping):
            raise ValueError(f"config key `{section}` must be a mapping, got {value!r}")
    from irisml_tf.data.observation import load_observation_config
    from irisml_tf.physics.prior import load_prior_config

    cfg = {"model": _check_model(_merge_known(DEFAULT_MODEL, user.get("model") or {}, "model"))}
    # observation / prior: their own loaders validate, naming the key (`observation: `x` ...`)
    cfg["observation"] = load_observation_config(copy.deepcopy(dict(user.get("observation") or {})))
    cfg["prior"] = load_prior_config(copy.deepcopy(dict(user.get("prior") or {})))
    cfg["training"] = _check_training(_merge_known(DEFAULT_TRAINING,
                                                   user.get("training") or {}, "training"))
    return cfg


# -- overrides --------------------------------------------------------------------------------
def parse_override(item: str) -> tuple[list[str], Any]:
    """``"training.steps=100"`` → (["training", "steps"], 100); the value is parsed as YAML."""
    key, sep, raw = item.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ValueError(f"override `{item}` must look like section.key=value")
    path = key.split(".")
    if any(not p for p in path) or len(path) < 2:
        raise ValueError(f"override `{item}`: the key must be section.key[.sub...], e.g. "
                         "training.steps=100")
    try:
        value = load_yaml(raw) if raw.strip() else None
    except yaml.YAMLError as err:
        raise ValueError(f"override `{item}`: cannot parse the value as YAML ({err})") from None
    return path, value


def apply_overrides(user: dict, overrides: Iterable[str]) -> dict:
    """A copy of ``user`` with each ``key.sub=value`` override set (mappings made on the way)."""
    out = copy.deepcopy(user)
    for item in overrides:
        path, value = parse_override(item)
        node = out
        for i, part in enumerate(path[:-1]):
            nxt = node.get(part)
            if nxt is None:
                nxt = node[part] = {}
            elif not isinstance(nxt, dict):
                raise ValueError(f"override `{item}`: config key `{'.'.join(path[:i + 1])}` is "
                                 "not a mapping")
            node = nxt
        node[path[-1]] = value
    return out


def load_config(source: str | Path | Mapping | None = None,
                overrides: Iterable[str] = ()) -> dict:
    """Resolved, validated config: defaults ← ``source`` (YAML path or mapping) ← ``overrides``.

    Raises ValueError naming the key on any unknown key, wrong type or impossible value, and
    FileNotFoundError for a missing file.
    """
    if source is None:
        user: Any = {}
    elif isinstance(source, Mapping):
        user = copy.deepcopy(dict(source))
    else:
        path = Path(source)
        try:
            user = load_yaml(path.read_text())
        except yaml.YAMLError as err:
            raise ValueError(f"config file {path}: not valid YAML ({err})") from None
        user = user or {}
    if not isinstance(user, dict):
        raise ValueError(f"a config must be a mapping with sections {', '.join(SECTIONS)}")
    return _validate(apply_overrides(user, overrides))


def dump_config(config: Mapping, path: str | Path | None = None) -> str:
    """YAML text of a resolved config (written to ``path`` if given)."""
    text = yaml.safe_dump(_plain(config), sort_keys=False, default_flow_style=None, width=100)
    if path is not None:  # a resumed run rewrites its config.yaml: never leave half of one
        atomic_write(path, lambda tmp: tmp.write_text(text))
    return text


def _plain(value):
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        return value.item()
    return value


def config_diff(a: Mapping, b: Mapping, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two resolved configs."""
    keys = []
    for key in sorted(set(a) | set(b)):
        path = f"{prefix}{key}"
        va, vb = a.get(key), b.get(key)
        if isinstance(va, Mapping) and isinstance(vb, Mapping):
            keys += config_diff(va, vb, path + ".")
        elif _plain(va) != _plain(vb):
            keys.append(path)
    return keys
