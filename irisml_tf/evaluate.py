"""`irisml-tf evaluate`: accuracy and calibration of an exported model on fresh simulated stars.

Test stars: θ from the model's own prior (its run config's ``prior`` section), magnitudes from THE
simulator, catalogue errors, noise and missing bands from the run's observation model
(:class:`~irisml_tf.data.observation.ObservationModel`; ``ref_mag`` may be overridden). Every band
set sees the same stars with the same brightness and noise; only the observed bands differ:

* ``all``: the 25 bands; ``gaia_2mass_wise``: Gaia G/BP/RP + 2MASS J/H/Ks + WISE W1/W2 (8);
  ``gaia``: G/BP/RP (3). Fixed sets keep every one of their bands the model can predict, however
  faint: a band past its survey's detection limit is kept at σ = ``err_max`` (0.3 mag by default),
  so errors range from ``err_min`` to ``err_max`` (0.002–0.3 mag by default) for reference
  magnitudes (mean over the star's bands) uniform in ``ref_mag`` (8–20 mag by default).
* ``random``: the observation model's own missing-band draws (survey blocks, drops, random subsets).

Per set, from ``model.run`` with ``samples`` draws per star: RMSE, bias, MAD/NMAD of the posterior
median before importance sampling (the flow's draws, unweighted) and after (weighted); Teff RMSE
relative to Teff and on true Teff 4000–7000 K; expected coverage of central intervals at levels
1–99 % and the max |coverage − level| per parameter; SBC rank histograms; IS efficiency and k̂;
flag rates; wall time. Stars without any usable importance weight are left out of the after-IS
figures and counted (``n_no_weight``). Definitions: :mod:`irisml_tf.inference.metrics`.

Output directory: ``metrics.json``, ``stars_<set>.parquet`` (per-star truth and estimates) and PNGs
(``calibration.png``, ``pred_vs_true_<set>.png``, ``sbc_<set>.png``, ``is_diagnostics.png``,
``corner_star0.png`` with the emcee posterior of the same star overlaid). Same seed ⇒ same stars
and same numbers (wall times aside).
"""
from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from irisml_tf.inference import metrics as M
from irisml_tf.physics.bands import BAND_NAMES
from irisml_tf.physics.simulator import PARAM_NAMES

__all__ = ["BAND_SETS", "TARGETS", "evaluate", "simulate_test_sets", "run_model", "set_metrics",
           "check_targets", "format_targets", "compact"]

#: band set name → its bands (None = the observation model's random missing-band draws)
BAND_SETS: dict[str, tuple[str, ...] | None] = {
    "all": BAND_NAMES,
    "gaia_2mass_wise": ("Gaia_G", "Gaia_BP", "Gaia_RP", "2MASS_J", "2MASS_H", "2MASS_Ks", "WISE_W1", "WISE_W2"),
    "gaia": ("Gaia_G", "Gaia_BP", "Gaia_RP"),
    "random": None,
}

#: (key, label, limit, kind): "max" = value must be ≤ limit, "min" = ≥ limit. Accuracy and
#: coverage targets are checked before and after importance sampling, efficiency once.
TARGETS = (
    ("rel_teff_rmse", "teff RMSE / teff", 0.03, "max"),
    ("teff_rmse_4000_7000", "teff RMSE, 4-7 kK [K]", 150.0, "max"),
    ("rmse_logg", "logg RMSE [dex]", 0.5, "max"),
    ("rmse_mh", "mh RMSE [dex]", 0.3, "max"),
    ("rmse_av", "av RMSE [mag]", 0.12, "max"),
    *((f"coverage_{p}", f"max|cov-level| {p}", 0.05, "max") for p in PARAM_NAMES),
)
EFFICIENCY_TARGET = ("median_efficiency", "median IS efficiency", 0.10, "min")

_KEY = 0xE7A1  # second word of the test-set key: independent of the training stream's keys
_TEFF_WINDOW = (4000.0, 7000.0)
_FIXED_STAR = 0  # the corner plot's star (of the first set)


# -- the test stars -----------------------------------------------------------------------------
def simulate_test_sets(sim, prior, observation: Mapping, n: int, seed: int, sets: Sequence[str],
                       ref_mag: Sequence[float] | None = None) -> tuple[np.ndarray, dict]:
    """θ [n, 5] and, per band set, ``band_index`` int32 / ``mag`` / ``mag_err`` float32 [n, K].

    ``sim``, ``prior``: the model's (:meth:`~irisml_tf.serving.ExportedModel.physics`);
    ``observation``: its resolved observation config. Every set has the same stars and noise
    (:func:`~irisml_tf.data.stream.fixed_set` with the test-set key). Rows are compacted
    (observed bands first, columns beyond the largest band count dropped).
    """
    import tensorflow as tf

    from irisml_tf.data.observation import ObservationConfig, ObservationModel
    from irisml_tf.data.stream import fixed_set

    unknown = [s for s in sets if s not in BAND_SETS]
    if unknown:
        raise ValueError(f"unknown band set(s) {unknown}; known: {', '.join(BAND_SETS)}")
    obs_cfg = ObservationConfig.from_dict(observation).to_dict()
    if ref_mag is not None:
        obs_cfg["ref_mag"] = [float(ref_mag[0]), float(ref_mag[1])]
    obs = ObservationModel(obs_cfg, bands=sim.bands)
    out, theta = {}, None
    for s in sets:
        mask = None if BAND_SETS[s] is None else tf.constant([b in BAND_SETS[s] for b in sim.bands])
        x = fixed_set(prior, sim, obs, n, seed, _KEY, mask)
        theta = x.pop("theta")
        out[s] = _compact(x)
    return theta.astype(np.float32), out


def _compact(x: Mapping[str, np.ndarray]) -> dict:
    """Observed bands first in each row; drop all-pad columns (shorter sets run faster)."""
    order = np.argsort(x["band_index"] < 0, axis=1, kind="stable")
    k = max(int((x["band_index"] >= 0).sum(1).max(initial=0)), 1)
    return {name: np.take_along_axis(v, order, axis=1)[:, :k] for name, v in x.items()}


# -- running the model --------------------------------------------------------------------------
def run_model(model, x: Mapping[str, np.ndarray], theta: np.ndarray, num_samples: int, seed: int,
              set_id: int, batch_size: int, bar=None) -> dict:
    """``model.run`` over the stars in batches; keeps per-star summaries and PIT values.

    Returns dict of [S] / [S, 5] arrays (q_median, median, p16, p84, pit_before, pit_after,
    efficiency, khat, n_bands, flag_bits) and ``wall_seconds`` (model.run time only).
    """
    keep = ("q_median", "q_p16", "q_p84", "median", "p16", "p84", "efficiency", "khat", "n_bands",
            "flag_bits", "ess")
    out = {k: [] for k in (*keep, "pit_before", "pit_after")}
    wall = 0.0
    for b, start in enumerate(range(0, len(theta), batch_size)):
        sl = slice(start, start + batch_size)
        t0 = time.perf_counter()
        r = model.run(x["band_index"][sl], x["mag"][sl], x["mag_err"][sl], num_samples,
                      seed=(int(seed), set_id * 2**20 + b))
        wall += time.perf_counter() - t0
        for k in keep:
            out[k].append(r[k])
        out["pit_before"].append(M.pit(r["samples"], theta[sl]))
        out["pit_after"].append(M.pit(r["samples"], theta[sl], r["weights"]))
        if bar is not None:
            bar.update(len(r["median"]))
    res = {k: np.concatenate(v) for k, v in out.items()}
    res["wall_seconds"] = wall
    return res


# -- metrics ------------------------------------------------------------------------------------
def _stage(truth, estimate, u, levels, num_ranks, bins) -> dict:
    pe = M.point_errors(estimate, truth)
    cov, n_cov = M.coverage_from_pit(u, levels)
    dev = M.max_abs_deviation(cov, levels)
    hist = M.rank_histogram(M.sbc_ranks(u, num_ranks), num_ranks, bins)
    teff, teff_true = estimate[:, 0], truth[:, 0]
    window = (teff_true >= _TEFF_WINDOW[0]) & (teff_true <= _TEFF_WINDOW[1]) & np.isfinite(teff)
    return {
        "point": {p: {k: float(pe[k][d]) for k in ("rmse", "bias", "mad", "nmad")} | {"n": int(pe["n"][d])}
                  for d, p in enumerate(PARAM_NAMES)},
        "rel_teff_rmse": M.relative_rmse(teff, teff_true),
        "teff_rmse_4000_7000": (float(np.sqrt(np.mean((teff[window] - teff_true[window]) ** 2)))
                                if window.any() else float("nan")),
        "n_teff_4000_7000": int(window.sum()),
        "coverage": {"curve": {p: cov[:, d].tolist() for d, p in enumerate(PARAM_NAMES)},
                     "max_abs_dev": {p: float(dev[d]) for d, p in enumerate(PARAM_NAMES)},
                     "n": int(n_cov.min())},
        "sbc": {"edges": hist["edges"].tolist(), "num_ranks": int(num_ranks),
                "counts": {p: hist["counts"][:, d].tolist() for d, p in enumerate(PARAM_NAMES)},
                "expected": {p: hist["expected"][:, d].tolist() for d, p in enumerate(PARAM_NAMES)},
                "band_99": {p: [hist["band_lo"][:, d].tolist(), hist["band_hi"][:, d].tolist()]
                            for d, p in enumerate(PARAM_NAMES)},
                "pvalue": {p: float(hist["pvalue"][d]) for d, p in enumerate(PARAM_NAMES)}},
    }, cov, hist


def set_metrics(truth: np.ndarray, res: Mapping, x: Mapping, levels, num_ranks: int, bins: int,
                flag_bits: Mapping[str, int], err_max: float = np.inf) -> tuple[dict, dict]:
    """metrics.json entry of one band set, and the arrays its figures need. ``err_max``: the
    observation model's largest error (bands kept beyond their detection limit carry it)."""
    before, cov_b, hist_b = _stage(truth, res["q_median"], res["pit_before"], levels, num_ranks, bins)
    after, cov_a, hist_a = _stage(truth, res["median"], res["pit_after"], levels, num_ranks, bins)
    present = x["band_index"] >= 0
    khat = np.asarray(res["khat"], np.float64)
    eff = np.asarray(res["efficiency"], np.float64)
    n = len(truth)
    wall = float(res["wall_seconds"])
    entry = {
        "n": n,
        "n_bands": M.distribution_summary(present.sum(1)),
        "mag_err": M.distribution_summary(x["mag_err"][present]),
        "mag": M.distribution_summary(x["mag"][present]),
        "frac_bands_at_err_max": float(np.mean(x["mag_err"][present] >= err_max * (1 - 1e-6))),
        "before": before,
        "after": after,
        "importance_sampling": {
            "efficiency": M.distribution_summary(eff),
            "khat": M.distribution_summary(khat),
            # k̂ = +inf (too few usable weights to fit) counts as untrustworthy too
            "frac_khat_gt_0.7": float(np.mean(~(khat <= 0.7))),
            "frac_efficiency_lt_0.01": float(np.mean(~(eff >= 0.01))),
            "n_no_weight": int(np.sum(~np.all(np.isfinite(res["pit_after"]), axis=1))),
        },
        "flags": {name: float(np.mean((res["flag_bits"] & bit) != 0)) for name, bit in flag_bits.items()},
        "wall_seconds": wall,
        "stars_per_second": n / wall if wall > 0 else None,
    }
    entry["targets"] = check_targets(entry)
    arrays = {"coverage_before": cov_b, "coverage_after": cov_a, "sbc_before": hist_b, "sbc_after": hist_a}
    return entry, arrays


def _target_value(entry, stage, key):
    s = entry[stage]
    if key.startswith("rmse_"):
        return s["point"][key[5:]]["rmse"]
    if key.startswith("coverage_"):
        return s["coverage"]["max_abs_dev"][key[9:]]
    return s[key]


def _passes(value, limit, kind):
    if value is None or not np.isfinite(value):
        return False
    return bool(value <= limit) if kind == "max" else bool(value >= limit)


def check_targets(entry: Mapping) -> dict:
    """{target: {limit, kind, before, after, pass_before, pass_after}} (+ the efficiency target)."""
    out = {}
    for key, label, limit, kind in TARGETS:
        row = {"label": label, "limit": limit, "kind": kind}
        for stage in ("before", "after"):
            v = _target_value(entry, stage, key)
            row[stage], row[f"pass_{stage}"] = v, _passes(v, limit, kind)
        out[key] = row
    key, label, limit, kind = EFFICIENCY_TARGET
    v = entry["importance_sampling"]["efficiency"]["p50"]
    out[key] = {"label": label, "limit": limit, "kind": kind, "value": v, "pass": _passes(v, limit, kind)}
    return out


def format_targets(result: Mapping) -> str:
    """The compact table: one row per target and stage, one column per band set."""
    sets = list(result["sets"])
    width = max(12, *(len(s) + 2 for s in sets))
    head = f"{'target':<26}{'stage':<8}{'limit':>9}  " + "".join(f"{s:>{width}}" for s in sets)
    lines = [f"n = {result['n']} stars per set, {result['samples']} samples, seed {result['seed']}", head,
             "-" * len(head)]

    def cell(v, ok):
        if v is None or not np.isfinite(v):
            return f"{'n/a FAIL':>{width}}"
        txt = f"{v:.4g} {'ok' if ok else 'FAIL'}"
        return f"{txt:>{width}}"

    first = result["sets"][sets[0]]["targets"]
    for key, row in first.items():
        sym = "≤" if row["kind"] == "max" else "≥"
        limit = f"{sym}{row['limit']:g}"
        if "value" in row:
            cells = "".join(cell(result["sets"][s]["targets"][key]["value"],
                                 result["sets"][s]["targets"][key]["pass"]) for s in sets)
            lines.append(f"{row['label']:<26}{'':<8}{limit:>9}  {cells}")
            continue
        for stage in ("before", "after"):
            cells = "".join(cell(result["sets"][s]["targets"][key][stage],
                                 result["sets"][s]["targets"][key][f"pass_{stage}"]) for s in sets)
            label = row["label"] if stage == "before" else ""
            lines.append(f"{label:<26}{stage:<8}{limit:>9}  {cells}")
    speed = "  ".join(f"{s}: {result['sets'][s]['stars_per_second'] or 0:.0f}" for s in sets)
    lines.append(f"stars/s (model.run, {result['samples']} samples): {speed}")
    return "\n".join(lines)


# -- the MCMC reference of one star -------------------------------------------------------------
def _corner_star(model, sim, prior, x, theta, samples, seed, mcmc_steps, out_dir, plots):
    i = _FIXED_STAR
    bi, mag, err = x["band_index"][i:i + 1], x["mag"][i:i + 1], x["mag_err"][i:i + 1]
    t0 = time.perf_counter()
    r = model.run(bi, mag, err, samples, seed=(int(seed), -1))
    npe_seconds = time.perf_counter() - t0
    s, w = r["samples"][0], r["weights"][0]
    info = {"star": i, "truth": {p: float(v) for p, v in zip(PARAM_NAMES, theta[i])},
            "n_bands": int(r["n_bands"][0]), "npe": {"samples": int(samples), "seconds": npe_seconds,
                                                     "ess": float(r["ess"][0]),
                                                     "efficiency": float(r["efficiency"][0]),
                                                     "khat": float(r["khat"][0])},
            "mcmc": None}
    draws = {"flow (before IS)": (s, None), "flow + IS": (s, w)}
    if mcmc_steps:
        from irisml_tf.inference.mcmc import compare_to_npe, npe_init, run_mcmc

        nwalkers = 32
        # walkers start on flow draws (weight-proportional, so inside the support); the prior-based
        # start of run_mcmc if too few draws have weight
        init = npe_init(s, w, nwalkers, np.random.default_rng([int(seed), 0xC0]))
        res = run_mcmc(sim, prior, bi[0], mag[0], err[0], model.observation.sys_floor, nwalkers=nwalkers,
                       nsteps=int(mcmc_steps), burn=int(mcmc_steps) // 4, seed=int(seed), init=init)
        draws["MCMC (emcee)"] = (res.samples, None)
        info["mcmc"] = {"nsteps": res.nsteps, "burn": res.burn, "nwalkers": res.nwalkers,
                        "tau": res.tau.tolist(), "ess": res.ess.tolist(), "converged": res.converged,
                        "acceptance": res.acceptance, "wall_seconds": res.wall_seconds,
                        "init": "flow draws" if init is not None else "prior"}
        info["compare_to_npe"] = {"before": compare_to_npe(res.samples, s),
                                  "after": compare_to_npe(res.samples, s, w)}
    if plots:
        from irisml_tf import plots as P

        P.save(P.corner_comparison(draws, theta[i]), out_dir / "corner_star0.png")
    return info


# -- the whole evaluation -----------------------------------------------------------------------
def evaluate(model_dir: str | Path, out_dir: str | Path, *, n: int = 5000, seed: int = 0,
             samples: int = 1000, batch_size: int = 128, sets: Sequence[str] = tuple(BAND_SETS),
             ref_mag: Sequence[float] | None = None, grid: str | Path | None = None,
             levels: Sequence[float] = M.DEFAULT_LEVELS, sbc_ranks: int = 99, sbc_bins: int = 20,
             mcmc_steps: int | None = 2000, corner_samples: int = 5000, plots: bool = True,
             progress: bool = True) -> dict:
    """Evaluate the exported model at ``model_dir`` on ``n`` fresh stars per band set; write
    ``metrics.json``, per-star tables and figures to ``out_dir``; return the metrics dict.

    ``samples``: posterior draws per star (≤ the model's max_samples); ``sbc_ranks``: L of the
    SBC ranks 0 … L; ``mcmc_steps``: emcee steps per walker for the corner star (None/0 = no MCMC).
    """
    from tqdm.auto import tqdm

    from irisml_tf.catalog import write_table
    from irisml_tf.serving import load_model

    start = time.perf_counter()
    if n < 1:
        raise ValueError(f"`n` must be ≥ 1, got {n}")
    if not sets:
        raise ValueError("`sets`: give at least one band set")
    model = load_model(model_dir)
    meta = model.meta
    if not 1 <= samples <= meta.max_samples:
        raise ValueError(f"`samples` must be in 1 … {meta.max_samples} (the model's max_samples), got {samples}")
    if tuple(model.bands) != tuple(BAND_NAMES):
        raise ValueError(f"the model's bands {model.bands} differ from this package's {BAND_NAMES}")
    if ref_mag is not None and not ref_mag[0] < ref_mag[1]:
        raise ValueError(f"`ref_mag` must be (lo, hi) with lo < hi, got {tuple(ref_mag)}")
    sim, prior = model.physics(grid)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    levels = np.asarray(levels, np.float64)

    theta, xs = simulate_test_sets(sim, prior, model.observation, n, seed, sets, ref_mag)
    model.run(xs[sets[0]]["band_index"][:1], xs[sets[0]]["mag"][:1], xs[sets[0]]["mag_err"][:1], 2, 0)  # warm-up
    result = {
        "seed": int(seed), "n": int(n), "samples": int(samples), "batch_size": int(batch_size),
        "levels": levels.tolist(),
        "test_set": {"ref_mag": list(ref_mag or model.observation.ref_mag),
                     "err_range": [model.observation.err_min, model.observation.err_max],
                     "bands": {s: (list(BAND_SETS[s]) if BAND_SETS[s] else "random") for s in sets}},
        "model": {"path": str(model.path.resolve()), "step": meta.training.step,
                  "meta": meta.to_json()},
        "sets": {},
    }
    figs = {}
    with tqdm(total=n * len(sets), desc="evaluate", unit="star", disable=not progress) as bar:
        for set_id, s in enumerate(sets):
            bar.set_postfix_str(s)
            res = run_model(model, xs[s], theta, samples, seed, set_id, batch_size, bar)
            entry, figs[s] = set_metrics(theta, res, xs[s], levels, sbc_ranks, sbc_bins, meta.flag_bits,
                                         model.observation.err_max)
            result["sets"][s] = entry
            figs[s]["res"] = res
            _write_stars(write_table, out_dir / f"stars_{s}.parquet", theta, res)

    corner_n = min(int(corner_samples), meta.max_samples)
    result["corner"] = dict(set=sets[0], **_corner_star(model, sim, prior, xs[sets[0]], theta, corner_n,
                                                          seed, mcmc_steps, out_dir, plots))
    if plots:
        _figures(out_dir, result, figs, theta, levels)
    result["files"] = sorted(p.name for p in out_dir.iterdir() if p.suffix in (".png", ".parquet"))
    result["wall_seconds"] = time.perf_counter() - start
    (out_dir / "metrics.json").write_text(json.dumps(compact(result), indent=1, allow_nan=False) + "\n")
    return result


def _write_stars(write_table, path, theta, res):
    import pandas as pd

    cols = {}
    for d, p in enumerate(PARAM_NAMES):
        cols[f"true_{p}"] = theta[:, d]
        for k in ("median", "p16", "p84", "q_median", "q_p16", "q_p84"):
            cols[f"{k}_{p}"] = res[k][:, d]
    for k in ("n_bands", "efficiency", "ess", "khat", "flag_bits"):
        cols[k] = res[k]
    write_table(pd.DataFrame(cols), path)


def _figures(out_dir: Path, result, figs, theta, levels):
    from irisml_tf import plots as P

    curves = {s: (f["coverage_before"], f["coverage_after"]) for s, f in figs.items()}
    P.save(P.calibration_curves(levels, curves, result["n"]), out_dir / "calibration.png")
    for s, f in figs.items():
        eff = np.log10(np.clip(f["res"]["efficiency"], 1e-4, 1))
        P.save(P.predicted_vs_true(theta, f["res"]["median"], eff, "log10 IS efficiency",
                                   f"{s}: posterior median after IS"), out_dir / f"pred_vs_true_{s}.png")
        P.save(P.sbc_histograms({"before IS": f["sbc_before"], "after IS": f["sbc_after"]}, f"SBC ranks: {s}"),
               out_dir / f"sbc_{s}.png")
    P.save(P.is_diagnostics({s: f["res"]["efficiency"] for s, f in figs.items()},
                            {s: f["res"]["khat"] for s, f in figs.items()}), out_dir / "is_diagnostics.png")


def compact(value):
    """JSON-safe copy: numpy scalars/arrays to Python, non-finite floats to None."""
    if isinstance(value, Mapping):
        return {str(k): compact(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [compact(v) for v in value]
    if isinstance(value, np.ndarray):
        return compact(value.tolist())
    if isinstance(value, (np.bool_, bool)):
        return bool(value)
    if isinstance(value, (np.integer, int)):
        return int(value)
    if isinstance(value, (np.floating, float)):
        v = float(value)
        return v if np.isfinite(v) else None
    return value
