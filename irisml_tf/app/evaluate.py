"""``irisml-tf evaluate``: accuracy and calibration of an exported model on fresh simulated stars.

Test stars: :func:`~irisml_tf.data.testsets.simulate_test_sets` (the model's prior, THE
simulator, the run's observation model; band sets ``all``, ``gaia_2mass_wise``, ``gaia``,
``random`` with the same stars and noise).

Per set, from ``model.run`` (the adaptive engine, ``samples`` draws returned per star) and the
same number of the flow's own draws: RMSE, bias, MAD/NMAD of the posterior median before (the
flow alone, unweighted) and after (the engine's weighted posterior); Teff RMSE relative to Teff
and on true Teff 4000–7000 K; expected coverage of central intervals at levels 1–99 % and the max
|coverage − level| per parameter; SBC rank histograms; the engine's reach (stars at their target
ESS), ESS per target evaluation, draws, efficiency and k̂; flag rates; wall time. Stars without
any usable importance weight are left out of the after figures and counted (``n_no_weight``).
Definitions: :mod:`irisml_tf.inference.metrics`.

Targets (:data:`TARGETS`, :func:`target_verdict`): each is judged ``ok``, ``FAIL`` or
``n too small``. The value is first rounded to the precision shown (4 significant digits), so
0.050000000000000044 and 0.04999999999999999 both meet "≤ 0.05". Then the sample must be able to
decide: a target is ``n too small`` when the rounded value lies within 2 σ of its limit, σ being
the statistic's sampling error at this n — the binomial √(α(1 − α)/n) at the level α of the
largest coverage deviation, the delta-method error of an RMSE, the order-statistic error of the
median efficiency — or when fewer than 2 stars enter the statistic. A model far off the mark
fails even on few stars; one near its limit needs many to be told apart.

Parallaxes (``parallax``: ``"gaia"`` or a fractional error, :func:`~irisml_tf.data.testsets.
simulate_test_parallaxes`): every band set is also run with the stars' simulated parallaxes, as
``<set>+plx``, on the same stars and photometry, so the gain shows set against set. Those sets
also report the derived quantities (distance, radius, mass, luminosity): 68 % coverage of their
p16–p84 intervals and the median |relative error| of their medians, with the parallax targets
(:data:`PARALLAX_TARGETS`).

Output directory: ``metrics.json``, ``stars_<set>.parquet`` (per-star truth and estimates) and PNGs
(``calibration.png``, ``pred_vs_true_<set>.png``, ``sbc_<set>.png``, ``is_diagnostics.png``,
``corner_star0.png`` with the emcee posterior of the same star overlaid). Same seed ⇒ same stars
and same numbers (wall times aside).
"""
from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from irisml_tf.data.testsets import BAND_SETS, parallax_error_model, simulate_test_parallaxes, simulate_test_sets
from irisml_tf.inference import metrics
from irisml_tf.inference.engine import DERIVED_NAMES
from irisml_tf.physics.bands import BAND_NAMES
from irisml_tf.physics.simulator import PARAM_NAMES

__all__ = ["EvaluateOptions", "Evaluation", "TARGETS", "EFFICIENCY_TARGET", "PARALLAX_TARGETS", "PLX_SUFFIX",
           "DECIDE_SIGMAS", "evaluate",
           "run_model", "set_metrics", "check_targets", "target_verdict", "format_targets", "json_safe"]

#: (key, label, limit, kind): "max" = value must be ≤ limit, "min" = ≥ limit. Accuracy and
#: coverage targets are checked before (the flow alone) and after (the engine); the engine's
#: reach (share of stars at their target ESS within the draw budget) once.
TARGETS = (
    ("rel_teff_rmse", "teff RMSE / teff", 0.03, "max"),
    ("teff_rmse_4000_7000", "teff RMSE, 4-7 kK [K]", 150.0, "max"),
    ("rmse_logg", "logg RMSE [dex]", 0.5, "max"),
    ("rmse_mh", "mh RMSE [dex]", 0.3, "max"),
    ("rmse_av", "av RMSE [mag]", 0.12, "max"),
    *((f"coverage_{p}", f"max|cov-level| {p}", 0.03, "max") for p in PARAM_NAMES),
)
EFFICIENCY_TARGET = ("reached_target", "stars at target ESS", 0.95, "min")
#: targets of the sets run with parallaxes (after the engine only): log g RMSE, and the 68 %
#: coverage of each derived quantity's p16-p84 interval
PARALLAX_TARGETS = (
    ("plx_rmse_logg", "logg RMSE with plx [dex]", 0.2, "max"),
    *((f"coverage68_{d}", f"|cov68-0.68| {d}", 0.03, "max") for d in DERIVED_NAMES),
)
#: name suffix of a band set run with parallaxes
PLX_SUFFIX = "+plx"
#: a target is decided only where its value is more than this many sampling σ from the limit
DECIDE_SIGMAS = 2.0
_SHOWN = ".4g"  # the precision targets are printed, and compared, at
_TEFF_WINDOW = (4000.0, 7000.0)
_FIXED_STAR = 0  # the corner plot's star (of the first set)
_MCMC_WALKERS = 32


@dataclass(frozen=True)
class EvaluateOptions:
    """What ``irisml-tf evaluate`` measures (the command's options of the same names).

    ``samples``: posterior draws per star (≤ the model's max_samples); ``ref_mag``: (lo, hi)
    reference magnitude range of the test stars (None = the run's); ``grid``: the model's grid
    file (None = the shipped one); ``sbc_ranks``: L of the SBC ranks 0 … L; ``mcmc_steps``: emcee
    steps per walker for the corner star (None/0 = no MCMC; the first quarter is burn-in);
    ``parallax``: None, or the parallax errors of a second run of every set with parallaxes
    (``"gaia"`` or a fraction of the parallax; module docstring).
    """

    n: int = 5000
    seed: int = 0
    samples: int = 1000
    batch_size: int = 128
    sets: tuple[str, ...] = tuple(BAND_SETS)
    ref_mag: tuple[float, float] | None = None
    grid: str | Path | None = None
    levels: tuple[float, ...] = tuple(metrics.DEFAULT_LEVELS)
    sbc_ranks: int = 99
    sbc_bins: int = 20
    mcmc_steps: int | None = 2000
    corner_samples: int = 5000
    plots: bool = True
    progress: bool = True
    parallax: str | float | None = None

    def __post_init__(self):
        if self.parallax is not None:
            object.__setattr__(self, "parallax", parallax_error_model(self.parallax))
        if self.n < 1:
            raise ValueError(f"`n` must be ≥ 1, got {self.n}")
        if not self.sets:
            raise ValueError("`sets`: give at least one band set")
        if self.ref_mag is not None and not self.ref_mag[0] < self.ref_mag[1]:
            raise ValueError(f"`ref_mag` must be (lo, hi) with lo < hi, got {tuple(self.ref_mag)}")


@dataclass
class Evaluation:
    """What :func:`evaluate` measured: ``metrics`` is the content of ``metrics.json``."""

    metrics: dict
    out_dir: Path

    @property
    def files(self) -> list[str]:
        return self.metrics["files"]

    @property
    def wall_seconds(self) -> float:
        return self.metrics["wall_seconds"]

    def targets_table(self) -> str:
        return format_targets(self.metrics)

    def failed_targets(self) -> list[str]:
        """Targets of the first band set judged FAIL (at either stage)."""
        first = next(iter(self.metrics["sets"].values()))["targets"]
        return [k for k, row in first.items() if "FAIL" in _verdicts(row)]

    def undecided_targets(self) -> list[str]:
        """Targets of the first band set the sample is too small to judge (at some stage)."""
        first = next(iter(self.metrics["sets"].values()))["targets"]
        return [k for k, row in first.items() if "n too small" in _verdicts(row)]


def _verdicts(row: Mapping) -> list[str]:
    return [v for k, v in row.items() if k.startswith("verdict")]


# -- running the model --------------------------------------------------------------------------
def run_model(model, x: Mapping[str, np.ndarray], theta: np.ndarray, num_samples: int, seed: int,
              set_id: int, batch_size: int, bar=None, parallax: Mapping[str, np.ndarray] | None = None) -> dict:
    """``model.run`` (the engine) over the stars in batches; keeps per-star summaries and PIT values.

    "Before" is the flow alone: ``num_samples`` draws of the exported weights' flow
    (:meth:`~irisml_tf.model.posterior.PosteriorModel.sample_and_log_prob`, the same seed), as
    the engine's round 0 proposes them; "after" is the engine's posterior (its resampled draws).
    Returns dict of [S] / [S, 5] arrays (q_median, median, p16, p84, pit_before, pit_after,
    efficiency, khat, n_bands, flag_bits, n_draws, converged; with ``parallax`` — its
    ``parallax``/``parallax_error`` [S], zero-point corrected — also derived_median/p16/p84
    [S, 4]) and ``wall_seconds`` (model.run time only).
    """
    from irisml_tf.inference.summaries import summarize
    from irisml_tf.rowseed import call_seeds

    flow = model.posterior()  # built once per model, not per band set
    keep = ("median", "p16", "p84", "efficiency", "khat", "n_bands", "flag_bits", "ess", "n_draws", "converged",
            "n_target_evals")
    if parallax is not None:
        keep += ("derived_median", "derived_p16", "derived_p84")
    out = {k: [] for k in (*keep, "q_median", "q_p16", "q_p84", "pit_before", "pit_after")}
    wall = 0.0
    for b, start in enumerate(range(0, len(theta), batch_size)):
        sl = slice(start, start + batch_size)
        t0 = time.perf_counter()
        seeds = (int(seed), set_id * 2**20 + b)
        plx = {} if parallax is None else {"parallax": parallax["parallax"][sl], "parallax_zero_point": 0.0,
                                           "parallax_error": parallax["parallax_error"][sl]}
        r = model.run(x["band_index"][sl], x["mag"][sl], x["mag_err"][sl], num_samples, seed=seeds, **plx)
        wall += time.perf_counter() - t0
        for k in keep:
            out[k].append(r[k])
        q, _ = flow.sample_and_log_prob(num_samples, x["band_index"][sl], x["mag"][sl], x["mag_err"][sl],
                                        seed=call_seeds(seeds, len(r["median"])))
        q = q.numpy()
        for k, v in summarize(q, None).items():
            if f"q_{k}" in out:
                out[f"q_{k}"].append(v.numpy())
        out["pit_before"].append(metrics.pit(q, theta[sl]))
        out["pit_after"].append(metrics.pit(r["samples"], theta[sl], r["weights"]))
        if bar is not None:
            bar.update(len(r["median"]))
    res = {k: np.concatenate(v) for k, v in out.items()}
    res["wall_seconds"] = wall
    return res


# -- metrics ------------------------------------------------------------------------------------
def _point(estimate, truth) -> dict:
    pe = metrics.point_errors(estimate, truth)
    return {p: {k: float(pe[k][d]) for k in ("rmse", "bias", "mad", "nmad")} | {"n": int(pe["n"][d])}
            for d, p in enumerate(PARAM_NAMES)}


def _teff_window(teff, teff_true):
    window = (teff_true >= _TEFF_WINDOW[0]) & (teff_true <= _TEFF_WINDOW[1]) & np.isfinite(teff)
    rmse = float(np.sqrt(np.mean((teff[window] - teff_true[window]) ** 2))) if window.any() else float("nan")
    return rmse, window


def _sbc(u, num_ranks, bins):
    hist = metrics.rank_histogram(metrics.sbc_ranks(u, num_ranks), num_ranks, bins)
    per = lambda a: {p: a[:, d].tolist() for d, p in enumerate(PARAM_NAMES)}  # noqa: E731
    entry = {"edges": hist["edges"].tolist(), "num_ranks": int(num_ranks), "counts": per(hist["counts"]),
             "expected": per(hist["expected"]),
             "band_99": {p: [hist["band_lo"][:, d].tolist(), hist["band_hi"][:, d].tolist()]
                         for d, p in enumerate(PARAM_NAMES)},
             "pvalue": {p: float(hist["pvalue"][d]) for d, p in enumerate(PARAM_NAMES)}}
    return entry, hist


def _stage(truth, estimate, u, levels, num_ranks, bins):
    """One stage (before or after IS): its metrics.json entry, the coverage curves [L, 5], the SBC
    histogram and each target's sampling σ and star count."""
    cov, n_cov = metrics.coverage_from_pit(u, levels)
    dev = metrics.max_abs_deviation(cov, levels)
    teff, teff_true = estimate[:, 0], truth[:, 0]
    teff_rmse, window = _teff_window(teff, teff_true)
    sbc, hist = _sbc(u, num_ranks, bins)
    entry = {
        "point": _point(estimate, truth),
        "rel_teff_rmse": metrics.relative_rmse(teff, teff_true),
        "teff_rmse_4000_7000": teff_rmse,
        "n_teff_4000_7000": int(window.sum()),
        "coverage": {"curve": {p: cov[:, d].tolist() for d, p in enumerate(PARAM_NAMES)},
                     "max_abs_dev": {p: float(dev[d]) for d, p in enumerate(PARAM_NAMES)},
                     "n": int(n_cov.min())},
        "sbc": sbc,
    }
    return entry, cov, hist, _stage_noise(truth, estimate, cov, n_cov, levels, window)


def _stage_noise(truth, estimate, cov, n_cov, levels, window) -> dict[str, tuple[float, int]]:
    """target key → (sampling σ of its statistic, stars it uses)."""
    err = estimate - truth
    rel = err[:, 0] / truth[:, 0]
    noise = {"rel_teff_rmse": (metrics.rmse_standard_error(rel), int(np.isfinite(rel).sum())),
             "teff_rmse_4000_7000": (metrics.rmse_standard_error(err[window, 0]), int(window.sum()))}
    for d, p in enumerate(PARAM_NAMES):
        noise[f"rmse_{p}"] = (metrics.rmse_standard_error(err[:, d]), int(np.isfinite(err[:, d]).sum()))
        worst = levels[int(np.nanargmax(np.abs(cov[:, d] - levels)))] if np.isfinite(cov[:, d]).any() else 0.5
        noise[f"coverage_{p}"] = (metrics.coverage_standard_error(worst, n_cov[d]), int(n_cov[d]))
    return noise


def _importance_sampling(res: Mapping) -> dict:
    khat = np.asarray(res["khat"], np.float64)
    eff = np.asarray(res["efficiency"], np.float64)
    per_eval = np.asarray(res["ess"], np.float64) / np.maximum(np.asarray(res["n_target_evals"], np.float64), 1)
    return {
        "reached_target": float(np.mean(res["converged"])),
        "ess_per_eval": metrics.distribution_summary(per_eval),
        "draws": metrics.distribution_summary(np.asarray(res["n_draws"], np.float64)),
        "ess": metrics.distribution_summary(np.asarray(res["ess"], np.float64)),
        "efficiency": metrics.distribution_summary(eff),
        "khat": metrics.distribution_summary(khat),
        # k̂ = +inf (too few usable weights to fit) counts as untrustworthy too
        "frac_khat_gt_0.7": float(np.mean(~(khat <= 0.7))),
        "frac_efficiency_lt_0.01": float(np.mean(~(eff >= 0.01))),
        "n_no_weight": int(np.sum(~np.all(np.isfinite(res["pit_after"]), axis=1))),
    }


def set_metrics(truth: np.ndarray, res: Mapping, x: Mapping, levels, num_ranks: int, bins: int,
                flag_bits: Mapping[str, int], err_max: float = np.inf,
                parallax: Mapping[str, np.ndarray] | None = None) -> tuple[dict, dict]:
    """metrics.json entry of one band set, and the arrays its figures need. ``err_max``: the
    observation model's largest error (bands kept beyond their detection limit carry it);
    ``parallax``: the set's simulated parallaxes and derived truths
    (:func:`~irisml_tf.data.testsets.simulate_test_parallaxes`) when it ran with them."""
    levels = np.asarray(levels, np.float64)
    before, cov_b, hist_b, noise_b = _stage(truth, res["q_median"], res["pit_before"], levels, num_ranks, bins)
    after, cov_a, hist_a, noise_a = _stage(truth, res["median"], res["pit_after"], levels, num_ranks, bins)
    present = x["band_index"] >= 0
    n = len(truth)
    wall = float(res["wall_seconds"])
    reached = float(np.mean(res["converged"]))
    entry = {
        "n": n,
        "n_bands": metrics.distribution_summary(present.sum(1)),
        "mag_err": metrics.distribution_summary(x["mag_err"][present]),
        "mag": metrics.distribution_summary(x["mag"][present]),
        "frac_bands_at_err_max": float(np.mean(x["mag_err"][present] >= err_max * (1 - 1e-6))),
        "before": before,
        "after": after,
        "importance_sampling": _importance_sampling(res),
        "flags": {name: float(np.mean((res["flag_bits"] & bit) != 0)) for name, bit in flag_bits.items()},
        "wall_seconds": wall,
        "stars_per_second": n / wall if wall > 0 else None,
    }
    noise = {"before": noise_b, "after": noise_a,
             # a share of stars is a binomial proportion, as a coverage is
             EFFICIENCY_TARGET[0]: (metrics.coverage_standard_error(reached, n), n)}
    if parallax is not None:
        entry["parallax"], noise["parallax"] = _parallax_metrics(res, parallax)
        noise["parallax"]["plx_rmse_logg"] = noise_a["rmse_logg"]  # the after-stage logg RMSE
    entry["targets"] = check_targets(entry, noise)
    arrays = {"coverage_before": cov_b, "coverage_after": cov_a, "sbc_before": hist_b, "sbc_after": hist_a}
    return entry, arrays


def _parallax_metrics(res: Mapping, plx: Mapping) -> tuple[dict, dict]:
    """The parallax entry of a set (S/N, derived quantities) and its derived targets' (σ, n)."""
    snr = plx["parallax"] / plx["parallax_error"]
    entry = {"snr": metrics.distribution_summary(snr[np.isfinite(snr)]), "derived": {}}
    noise = {}
    for d, name in enumerate(DERIVED_NAMES):
        true, med = plx[name], res["derived_median"][:, d]
        lo, hi = res["derived_p16"][:, d], res["derived_p84"][:, d]
        ok = np.isfinite(true) & np.isfinite(lo) & np.isfinite(hi)
        cov = float(np.mean((lo[ok] <= true[ok]) & (true[ok] <= hi[ok]))) if ok.any() else float("nan")
        rel = np.abs(med[ok] / true[ok] - 1.0)
        entry["derived"][name] = {"coverage_68": cov, "n": int(ok.sum()),
                                  "median_abs_rel_err": float(np.median(rel)) if ok.any() else float("nan")}
        noise[f"coverage68_{name}"] = (metrics.coverage_standard_error(0.68, int(ok.sum())), int(ok.sum()))
    return entry, noise


# -- targets ------------------------------------------------------------------------------------
def _target_value(entry, stage, key):
    s = entry[stage]
    if key.startswith("rmse_"):
        return s["point"][key[5:]]["rmse"]
    if key.startswith("coverage_"):
        return s["coverage"]["max_abs_dev"][key[9:]]
    return s[key]


def _shown(value) -> float:
    """``value`` rounded to the precision the table prints (NaN for None / non-finite)."""
    if value is None or not np.isfinite(value):
        return float("nan")
    return float(format(float(value), _SHOWN))


def _passes(value, limit, kind) -> bool:
    v = _shown(value)
    if not np.isfinite(v):
        return False
    return bool(v <= limit) if kind == "max" else bool(v >= limit)


def target_verdict(value, limit: float, kind: str, sigma: float, n: int) -> str:
    """``ok``, ``FAIL`` or ``n too small`` (the rule: module docstring).

    ``value``: the statistic; ``sigma``: its sampling standard error; ``n``: the stars it uses.
    The value is compared at the precision shown; it is undecided when fewer than 2 stars enter
    it or when it lies less than :data:`DECIDE_SIGMAS` σ from ``limit`` (σ NaN counts as
    undecided; σ = 0, an exact statistic, decides even at the limit).
    """
    if n < 2:
        return "n too small"
    v = _shown(value)
    if not np.isfinite(v):
        return "FAIL"
    if not abs(v - limit) >= DECIDE_SIGMAS * sigma:  # also when σ is NaN
        return "n too small"
    return "ok" if _passes(v, limit, kind) else "FAIL"


def check_targets(entry: Mapping, noise: Mapping) -> dict:
    """{target: {label, limit, kind, before, after, pass_before, pass_after, sigma_before,
    sigma_after, verdict_before, verdict_after}} and the efficiency target ({…, value, pass,
    sigma, verdict}). ``pass_*``: the value meets the limit at the shown precision; ``verdict_*``:
    :func:`target_verdict`. ``noise``: {"before"/"after": {key: (σ, n)}, efficiency key: (σ, n)}."""
    out = {}
    for key, label, limit, kind in TARGETS:
        row = {"label": label, "limit": limit, "kind": kind}
        for stage in ("before", "after"):
            v = _target_value(entry, stage, key)
            sigma, n = noise[stage][key]
            row[stage], row[f"pass_{stage}"] = v, _passes(v, limit, kind)
            row[f"sigma_{stage}"], row[f"verdict_{stage}"] = sigma, target_verdict(v, limit, kind, sigma, n)
        out[key] = row
    single = [(EFFICIENCY_TARGET, entry["importance_sampling"]["reached_target"], noise[EFFICIENCY_TARGET[0]])]
    if "parallax" in entry:
        derived = entry["parallax"]["derived"]
        values = {"plx_rmse_logg": entry["after"]["point"]["logg"]["rmse"],
                  **{f"coverage68_{d}": abs(derived[d]["coverage_68"] - 0.68) for d in DERIVED_NAMES}}
        single += [(t, values[t[0]], noise["parallax"][t[0]]) for t in PARALLAX_TARGETS]
    for (key, label, limit, kind), v, (sigma, n) in single:
        out[key] = {"label": label, "limit": limit, "kind": kind, "value": v, "pass": _passes(v, limit, kind),
                    "sigma": sigma, "verdict": target_verdict(v, limit, kind, sigma, n)}
    return out


def _cell(value, verdict: str, width: int) -> str:
    v = _shown(value)
    txt = f"{format(v, _SHOWN) if np.isfinite(v) else 'n/a'} {verdict}"
    return f"{txt:>{width}}"


def format_targets(result: Mapping) -> str:
    """The compact table: one row per target and stage, one column per band set."""
    sets = list(result["sets"])
    width = max(22, *(len(s) + 2 for s in sets))  # room for "-0.001234 n too small"
    head = f"{'target':<26}{'stage':<8}{'limit':>9}  " + "".join(f"{s:>{width}}" for s in sets)
    lines = [f"n = {result['n']} stars per set, {result['samples']} samples, seed {result['seed']}", head,
             "-" * len(head)]
    targets = {s: result["sets"][s]["targets"] for s in sets}
    rows = {}  # every set's targets, in order (the parallax ones only in the +plx sets)
    for t in targets.values():
        rows.update((k, r) for k, r in t.items() if k not in rows)
    for key, row in rows.items():
        limit = f"{'≤' if row['kind'] == 'max' else '≥'}{row['limit']:g}"
        if "value" in row:
            cells = "".join(_cell(targets[s][key]["value"], targets[s][key]["verdict"], width) if key in targets[s]
                            else f"{'—':>{width}}" for s in sets)
            lines.append(f"{row['label']:<26}{'':<8}{limit:>9}  {cells}")
            continue
        for stage in ("before", "after"):
            cells = "".join(_cell(targets[s][key][stage], targets[s][key][f"verdict_{stage}"], width)
                            for s in sets)
            label = row["label"] if stage == "before" else ""
            lines.append(f"{label:<26}{stage:<8}{limit:>9}  {cells}")
    if any("n too small" in _verdicts(r) for t in targets.values() for r in t.values()):
        lines.append(f"n too small: the value lies within {DECIDE_SIGMAS:g} σ of the limit (σ: its sampling "
                     "error at this n), so this sample cannot decide it; evaluate more stars (--n)")
    speed = "  ".join(f"{s}: {result['sets'][s]['stars_per_second'] or 0:.0f}" for s in sets)
    lines.append(f"stars/s (model.run, {result['samples']} samples): {speed}")
    return "\n".join(lines)


# -- the MCMC reference of one star -------------------------------------------------------------
def _corner_star(model, sim, prior, x, theta, samples: int, seed: int, mcmc_steps, out_dir: Path,
                 plots: bool) -> dict:
    """Star 0: its NPE posterior with ``samples`` draws, the MCMC reference started on those draws
    (:func:`~irisml_tf.inference.mcmc.mcmc_reference`), the corner plot of all three."""
    i = _FIXED_STAR
    bi, mag, err = x["band_index"][i:i + 1], x["mag"][i:i + 1], x["mag_err"][i:i + 1]
    t0 = time.perf_counter()
    r = model.run(bi, mag, err, samples, seed=(int(seed), -1))
    npe_seconds = time.perf_counter() - t0
    s, w = r["samples"][0], r["weights"][0]
    info = {"star": i, "truth": {p: float(v) for p, v in zip(PARAM_NAMES, theta[i])},
            "n_bands": int(r["n_bands"][0]),
            "npe": {"samples": int(samples), "seconds": npe_seconds, "ess": float(r["ess"][0]),
                    "efficiency": float(r["efficiency"][0]), "khat": float(r["khat"][0])},
            "mcmc": None}
    draws = {"engine": (s, w)}
    if mcmc_steps:
        from irisml_tf.inference.mcmc import ChainOptions, LogPosterior, mcmc_reference

        chain = ChainOptions(nwalkers=_MCMC_WALKERS, nsteps=int(mcmc_steps), burn=int(mcmc_steps) // 4)
        ref = mcmc_reference(LogPosterior(sim, prior, model.observation.sys_floor), bi[0], mag[0], err[0], chain,
                             npe_samples=s, npe_weights=w, init="npe", seed=int(seed))
        res = ref.mcmc
        draws["MCMC (emcee)"] = (res.samples, None)
        info["mcmc"] = {"nsteps": res.nsteps, "burn": res.burn, "nwalkers": res.nwalkers,
                        "tau": res.tau.tolist(), "ess": res.ess.tolist(), "converged": res.converged,
                        "acceptance": res.acceptance, "wall_seconds": res.wall_seconds,
                        "init": "flow draws" if ref.init == "npe" else "prior"}
        info["compare_to_npe"] = {"before": ref.before, "after": ref.after}
    if plots:
        from irisml_tf.plots import corner_comparison, save

        save(corner_comparison(draws, theta[i]), out_dir / "corner_star0.png")
    return info


# -- the whole evaluation -----------------------------------------------------------------------
def _load(model_dir, options: EvaluateOptions):
    from irisml_tf.serving import load_model

    model = load_model(model_dir)
    if not 1 <= options.samples <= model.meta.max_samples:
        raise ValueError(f"`samples` must be in 1 … {model.meta.max_samples} (the model's max_samples), "
                         f"got {options.samples}")
    if tuple(model.bands) != tuple(BAND_NAMES):
        raise ValueError(f"the model's bands {model.bands} differ from this package's {BAND_NAMES}")
    return model


def _header(model, options: EvaluateOptions) -> dict:
    """The run's settings at the top of metrics.json."""
    obs, meta = model.observation, model.meta
    return {
        "seed": int(options.seed), "n": int(options.n), "samples": int(options.samples),
        "batch_size": int(options.batch_size), "levels": [float(v) for v in options.levels],
        "test_set": {"ref_mag": list(options.ref_mag or obs.ref_mag), "err_range": [obs.err_min, obs.err_max],
                     "bands": {s: (list(BAND_SETS[s]) if BAND_SETS[s] else "random") for s in options.sets}},
        "model": {"path": str(model.path.resolve()), "step": meta.training.step, "meta": meta.to_json()},
        "sets": {},
    }


def _evaluate_sets(model, theta, xs, options: EvaluateOptions, out_dir: Path, result: dict, plx=None) -> dict:
    """Every band set through the model (then again with the parallaxes ``plx``, if any, as
    ``<set>+plx`` with the same seeds); its entry into ``result["sets"]``, its stars to
    ``stars_<set>.parquet``. Returns the arrays the figures need, per set."""
    from irisml_tf.progress import progress_bar

    figs = {}
    levels = np.asarray(options.levels, np.float64)
    runs = [(s, i, None) for i, s in enumerate(options.sets)]
    if plx is not None:
        runs += [(s + PLX_SUFFIX, i, plx) for i, s in enumerate(options.sets)]
    bar = progress_bar(options.n * len(runs), desc="evaluate", unit="star", enabled=options.progress)
    try:
        for name, set_id, p in runs:
            x = xs[options.sets[set_id]]
            bar.set_postfix(set=name)
            res = run_model(model, x, theta, options.samples, options.seed, set_id, options.batch_size, bar, p)
            result["sets"][name], figs[name] = set_metrics(theta, res, x, levels, options.sbc_ranks,
                                                           options.sbc_bins, model.meta.flag_bits,
                                                           model.observation.err_max, p)
            figs[name]["res"] = res
            _write_stars(out_dir / f"stars_{name}.parquet", theta, res, p)
    finally:
        bar.close()
    return figs


def evaluate(model_dir: str | Path | None, out_dir: str | Path, options: EvaluateOptions | None = None) -> Evaluation:
    """Evaluate the exported model at ``model_dir`` (None = the default model) on ``options.n``
    fresh stars per band set; write ``metrics.json``, per-star tables and figures to ``out_dir``."""
    from irisml_tf.extras import require
    from irisml_tf.workdir import atomic_json

    options = EvaluateOptions() if options is None else options
    if options.plots:  # say what is missing before the long run, not after it
        require("plots")
    if options.mcmc_steps:
        require("mcmc")
    start = time.perf_counter()
    model = _load(model_dir, options)
    sim, prior = model.physics(options.grid)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    sets = list(options.sets)
    theta, xs = simulate_test_sets(sim, prior, model.observation, options.n, options.seed, sets, options.ref_mag)
    first = xs[sets[0]]
    model.run(first["band_index"][:1], first["mag"][:1], first["mag_err"][:1], 2, 0)  # warm-up
    result = _header(model, options)
    plx = None
    if options.parallax is not None:
        plx = simulate_test_parallaxes(sim, theta, first["mu"], options.parallax, options.seed,
                                       model.meta.mass_model)
        result["test_set"]["parallax"] = {"error": options.parallax, "mass_prior": asdict(model.meta.mass_model),
                                          "zero_point": 0.0}
    figs = _evaluate_sets(model, theta, xs, options, out_dir, result, plx)
    corner_n = min(int(options.corner_samples), model.meta.max_samples)
    result["corner"] = dict(set=sets[0], **_corner_star(model, sim, prior, first, theta, corner_n, options.seed,
                                                          options.mcmc_steps, out_dir, options.plots))
    if options.plots:
        _figures(out_dir, result, figs, theta, np.asarray(options.levels, np.float64))
    result["files"] = sorted(p.name for p in out_dir.iterdir() if p.suffix in (".png", ".parquet"))
    result["wall_seconds"] = time.perf_counter() - start
    atomic_json(out_dir / "metrics.json", json_safe(result))
    return Evaluation(result, out_dir)


def _write_stars(path: Path, theta, res, plx=None) -> None:
    import pandas as pd

    from irisml_tf.catalog import write_table

    cols = {}
    for d, p in enumerate(PARAM_NAMES):
        cols[f"true_{p}"] = theta[:, d]
        for k in ("median", "p16", "p84", "q_median", "q_p16", "q_p84"):
            cols[f"{k}_{p}"] = res[k][:, d]
    for k in ("n_bands", "efficiency", "ess", "khat", "flag_bits"):
        cols[k] = res[k]
    if plx is not None:
        cols["parallax"], cols["parallax_error"] = plx["parallax"], plx["parallax_error"]
        for d, name in enumerate(DERIVED_NAMES):
            cols[f"true_{name}"] = plx[name]
            for k in ("median", "p16", "p84"):
                cols[f"{name}_{k}"] = res[f"derived_{k}"][:, d]
    write_table(pd.DataFrame(cols), path)


def _figures(out_dir: Path, result, figs, theta, levels) -> None:
    from irisml_tf import plots

    curves = {s: (f["coverage_before"], f["coverage_after"]) for s, f in figs.items()}
    plots.save(plots.calibration_curves(levels, curves, result["n"]), out_dir / "calibration.png")
    for s, f in figs.items():
        eff = np.log10(np.clip(f["res"]["efficiency"], 1e-4, 1))
        plots.save(plots.predicted_vs_true(theta, f["res"]["median"], eff, "log10 IS efficiency",
                                           f"{s}: posterior median after IS"), out_dir / f"pred_vs_true_{s}.png")
        plots.save(plots.sbc_histograms({"before IS": f["sbc_before"], "after IS": f["sbc_after"]},
                                        f"SBC ranks: {s}"), out_dir / f"sbc_{s}.png")
    plots.save(plots.is_diagnostics({s: f["res"]["efficiency"] for s, f in figs.items()},
                                    {s: f["res"]["khat"] for s, f in figs.items()}), out_dir / "is_diagnostics.png")


def json_safe(value):
    """JSON-safe copy: numpy scalars/arrays to Python, non-finite floats to None."""
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, np.ndarray):
        return json_safe(value.tolist())
    if isinstance(value, (np.bool_, bool)):
        return bool(value)
    if isinstance(value, (np.integer, int)):
        return int(value)
    if isinstance(value, (np.floating, float)):
        v = float(value)
        return v if np.isfinite(v) else None
    return value
