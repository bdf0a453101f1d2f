"""Time to 1000 effective posterior samples per star: the adaptive engine vs emcee.

    python benchmarks/bench_vs_mcmc.py [--model DIR] [--stars 20] [--seed 0] [--bands gwm|all] [--quick]

Stars: `irisml-tf evaluate`'s test stars (:func:`irisml_tf.data.testsets.simulate_test_sets`:
the model's prior, THE simulator, the model's observation model) in a fixed band set: by default the
realistic Gaia G/BP/RP + 2MASS J/H/Ks + WISE W1/W2 (8 bands), or all 25 with ``--bands all``.

Engine: one batched ``model.run`` for all stars (as a catalogue is run) at ``target_ess`` (per-star
adaptive importance sampling: each star stops at ESS ≥ target or at the model's draw budget; stars
still short are reported). Timed as the median of 5 calls after a warm-up; time per star = batch
time / stars. The comparison with emcee uses the 1000 draws resampled from each star's weighted
draws.

emcee: per star, :func:`irisml_tf.inference.mcmc.mcmc_reference` (the one MCMC-vs-NPE comparison)
on the same likelihood and prior (the model's sys_floor and prior config), 32 walkers, burn-in 500
steps, started from the best prior draws (NOT from NPE samples, so that emcee gets no help from
the network), extended until the smallest per-parameter ESS (= post-burn samples / emcee τ)
reaches the target (the 50 τ convergence rule is reported, not required). Time per star = its
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
    """The adaptive engine at ``target_ess`` (one batched call, as a catalogue is run): the median
    batch time of ``reps`` calls after a warm-up, and the outputs: (seconds, out)."""
    model.run(bi, mag, err, 1000, seed, target_ess=target_ess)  # warm-up at this shape
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        out = model.run(bi, mag, err, 1000, seed, target_ess=target_ess)
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def mcmc_rows(model, stars, out, t_npe: float, target: float, burn: int, seed: int) -> list[float]:
    """emcee per star until min ESS ≥ target; prints a row per star; returns the wall times."""
    import numpy as np

    from irisml_tf.inference.mcmc import ChainOptions, LogPosterior, mcmc_reference, run_mcmc

    theta, bi, mag, err = stars
    sim, prior = model.physics()
    log_post = LogPosterior(sim, prior, model.observation.sys_floor)
    # compile both walker-batch shapes and the initialisation first (not timed)
    run_mcmc(log_post, bi[0], mag[0], err[0], ChainOptions(nsteps=20, burn=10), seed=seed)
    chain = ChainOptions(nsteps=burn + 200, burn=burn, max_steps=50_000, until_converged=False, target_ess=target)
    print(f"emcee: 32 walkers, burn-in {burn} steps, prior-based start (not from NPE), run until "
          f"min ESS ≥ {target:g}")
    print(f"{'star':>4} {'teff':>7} {'logg':>5} {'nb':>3} {'npe_ess':>8} {'mc_steps':>8} "
          f"{'mc_ess':>7} {'tau_max':>7} {'50tau':>5} {'dteff/sd':>8} {'mcmc_s':>8} {'npe_ms':>7} {'ratio':>8}")
    times = []
    for i in range(len(theta)):
        ref = mcmc_reference(log_post, bi[i], mag[i], err[i], chain, npe_samples=out["samples"][i],
                             npe_weights=out["weights"][i], init="prior", seed=seed + i)
        r = ref.mcmc
        times.append(r.wall_seconds)
        print(f"{i:>4} {theta[i, 0]:7.0f} {theta[i, 1]:5.2f} {int((bi[i] >= 0).sum()):>3} "
              f"{out['ess'][i]:8.0f} {r.nsteps:>8} {r.ess.min():7.0f} {np.max(r.tau):7.1f} "
              f"{'yes' if r.converged else 'no':>5} {ref.after['teff']['median_diff_sigma']:8.2f} "
              f"{r.wall_seconds:8.2f} {t_npe * 1e3:7.2f} {r.wall_seconds / t_npe:8.0f}")
        sys.stdout.flush()
    return times


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

    from irisml_tf.data.testsets import BAND_SETS, simulate_test_sets
    from irisml_tf.serving import load_model

    stars, target, burn = args.stars, args.target_ess, 500
    if args.quick:
        stars, target, burn = min(stars, 3), 200.0, 200
    model = load_model(args.model)
    band_set = "all" if args.bands == "all" else "gaia_2mass_wise"
    sim, prior = model.physics()
    theta, sets = simulate_test_sets(sim, prior, model.observation, stars, args.seed, [band_set])
    bi, mag, err = (sets[band_set][k] for k in ("band_index", "mag", "mag_err"))
    print(f"model {model.path}; {stars} stars from its prior, bands: {', '.join(BAND_SETS[band_set])} "
          f"(observed: {int((bi >= 0).sum(1).min())}–{int((bi >= 0).sum(1).max())} per star); "
          f"target ESS {target:g}; cores {os.cpu_count()}")

    t_batch, out = time_npe(model, bi, mag, err, target, args.seed)
    t_npe = t_batch / stars
    short = np.flatnonzero(out["ess"] < target)
    print(f"engine: one batch of {stars} stars, median of 5 calls {t_batch:.3f} s → {t_npe * 1e3:.2f} ms "
          f"per star; draws per star median {np.median(out['n_draws']):.0f}, max {out['n_draws'].max()}")
    if short.size:
        print(f"engine: stars {short.tolist()} reach only ESS {np.round(out['ess'][short]).tolist()} "
              f"< {target:g} within the draw budget ({model.meta.engine_options.max_draws})")

    med = statistics.median(mcmc_rows(model, (theta, bi, mag, err), out, t_npe, target, burn, args.seed))
    print(f"median emcee time per star: {med:.2f} s; engine time per star: {t_npe * 1e3:.2f} ms "
          f"(batch of {stars})")
    print("ratio = median emcee wall time per star to ESS ≥ target / (engine batch time / stars)")
    ratio = med / t_npe
    print(f"{ratio:.0f}x" if ratio >= 100 else f"{ratio:.3g}x")


if __name__ == "__main__":
    main()
