"""Time to 1000 effective posterior samples per star: NPE + importance sampling vs emcee.

    python benchmarks/bench_vs_mcmc.py [--model DIR] [--stars 20] [--seed 0] [--bands gwm|all] [--quick]

Stars: `irisml-tf evaluate`'s test stars (:func:`irisml_tf.evaluate.simulate_test_sets`: the
model's prior, THE simulator, the model's observation model) in a fixed band set: by default the
realistic Gaia G/BP/RP + 2MASS J/H/Ks + WISE W1/W2 (8 bands), or all 25 with ``--bands all``.

NPE + IS: one batched ``model.run`` for all stars (as a catalogue is run), with N samples per star
chosen from a pilot run's efficiency so that every star reaches ESS ≥ target (N capped at the
model's max_samples; stars still short are reported). Timed as the median of 5 calls after a
warm-up; time per star = batch time / stars.

emcee: per star, :func:`irisml_tf.inference.mcmc.run_mcmc` on the same likelihood and prior (the
model's sys_floor and prior config), 32 walkers, burn-in 500 steps, started from the best prior
draws (NOT from NPE samples, so that emcee gets no help from the network), extended until the
smallest per-parameter ESS (= post-burn samples / emcee τ) reaches the target. Time per star = its
wall time (initialisation, burn-in and sampling). A warm-up chain compiles the graph first.

The last line is ``<ratio>x`` with ratio = median emcee time per star / NPE time per star.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

def time_npe(model, bi, mag, err, target_ess: float, seed: int, reps: int = 5):
    """Pick N from a pilot run, then the median batch time of ``reps`` calls: (N, seconds, out)."""
    import math

    import numpy as np

    cap = int(model.meta.max_samples)
    pilot = model.run(bi, mag, err, min(2000, cap), seed)
    eff = np.maximum(pilot["efficiency"], 1e-6)
    # 1.25 × what the worst star needs (the efficiency estimate is noisy), in thousands
    n = min(cap, max(1000, int(math.ceil(1.25 * target_ess / eff.min() / 1000.0)) * 1000))
    model.run(bi, mag, err, n, seed)  # warm-up at this shape
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        out = model.run(bi, mag, err, n, seed)
        times.append(time.perf_counter() - t0)
    return n, statistics.median(times), out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=None, help="exported model (default: irisml_tf.serving.default_model_path())")
    ap.add_argument("--stars", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--bands", choices=("gwm", "all"), default="gwm",
                    help="gwm: Gaia G/BP/RP + 2MASS J/H/Ks + WISE W1/W2 (default); all: 25 bands")
    ap.add_argument("--target-ess", type=float, default=1000.0)
    ap.add_argument("--quick", action="store_true", help="a check: 3 stars, target ESS 200, burn-in 200")
    args = ap.parse_args(argv)

    import numpy as np

    from irisml_tf.evaluate import BAND_SETS, simulate_test_sets
    from irisml_tf.inference.mcmc import compare_to_npe, run_mcmc
    from irisml_tf.serving import load_model

    stars, target, burn = args.stars, args.target_ess, 500
    if args.quick:
        stars, target, burn = min(stars, 3), 200.0, 200
    model = load_model(args.model)
    band_set = "all" if args.bands == "all" else "gaia_2mass_wise"
    bands = BAND_SETS[band_set]
    sim, prior = model.physics()
    theta, sets = simulate_test_sets(sim, prior, model.observation, stars, args.seed, [band_set])
    bi, mag, err = (sets[band_set][k] for k in ("band_index", "mag", "mag_err"))
    sys_floor = model.observation.sys_floor
    print(f"model {model.path}; {stars} stars from its prior, bands: {', '.join(bands)} "
          f"(observed: {int((bi >= 0).sum(1).min())}–{int((bi >= 0).sum(1).max())} per star); "
          f"target ESS {target:g}; cores {os.cpu_count()}")

    n, t_batch, out = time_npe(model, bi, mag, err, target, args.seed)
    t_npe = t_batch / stars
    short = np.flatnonzero(out["ess"] < target)
    print(f"NPE+IS: one batch of {stars} stars × N={n} samples, median of 5 calls {t_batch:.3f} s "
          f"→ {t_npe * 1e3:.2f} ms per star")
    if short.size:
        print(f"NPE+IS: stars {short.tolist()} reach only ESS {np.round(out['ess'][short]).tolist()} "
              f"< {target:g} at N={n} (the cap is max_samples={model.meta.max_samples})")

    # emcee: compile both walker-batch shapes and the initialisation first (not timed)
    run_mcmc(sim, prior, bi[0], mag[0], err[0], sys_floor, nsteps=20, burn=10, seed=args.seed)
    print("emcee: 32 walkers, burn-in", burn, "steps, prior-based start (not from NPE), run until "
          f"min ESS ≥ {target:g}")
    head = f"{'star':>4} {'teff':>7} {'logg':>5} {'nb':>3} {'npe_ess':>8} {'mc_steps':>8} " \
           f"{'mc_ess':>7} {'tau_max':>7} {'50tau':>5} {'dteff/sd':>8} {'mcmc_s':>8} {'npe_ms':>7} {'ratio':>8}"
    print(head)
    mc_times = []
    for i in range(stars):
        r = run_mcmc(sim, prior, bi[i], mag[i], err[i], sys_floor, nsteps=burn + 200, burn=burn,
                     seed=args.seed + i, target_ess=target, max_steps=50_000)
        mc_times.append(r.wall_seconds)
        w = out["weights"][i]
        cmp = compare_to_npe(r.samples, out["samples"][i], w)
        print(f"{i:>4} {theta[i, 0]:7.0f} {theta[i, 1]:5.2f} {int((bi[i] >= 0).sum()):>3} "
              f"{out['ess'][i]:8.0f} {r.nsteps:>8} {r.ess.min():7.0f} {r.tau.max():7.1f} "
              f"{'yes' if r.converged else 'no':>5} {cmp['teff']['median_diff_sigma']:8.2f} "
              f"{r.wall_seconds:8.2f} {t_npe * 1e3:7.2f} {r.wall_seconds / t_npe:8.0f}")
        sys.stdout.flush()
    med = statistics.median(mc_times)
    print(f"median emcee time per star: {med:.2f} s; NPE+IS time per star: {t_npe * 1e3:.2f} ms "
          f"(batch of {stars}, N={n})")
    print("ratio = median emcee wall time per star to ESS ≥ target / (NPE+IS batch time / stars)")
    ratio = med / t_npe
    print(f"{ratio:.0f}x" if ratio >= 100 else f"{ratio:.3g}x")


if __name__ == "__main__":
    main()
