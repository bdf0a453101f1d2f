"""How accurate can any estimator be? The exact posterior (emcee) on simulated stars vs the model.

    python benchmarks/bench_information_floor.py                  # shipped model, 30 stars, all 25 bands
    python benchmarks/bench_information_floor.py --stars 50 --band-set gaia_2mass_wise

The accuracy targets of `irisml-tf evaluate` (e.g. log g RMSE ≤ 0.5 dex) can be out of reach of the
data themselves. For each simulated star (the model's prior and observation model, the same
generator as `evaluate`), emcee samples the exact posterior under the same likelihood and prior
(:func:`irisml_tf.inference.mcmc.mcmc_reference`: walkers started from the model's
importance-weighted draws, 32 walkers × --steps, first --burn discarded). The RMSE of the exact
posterior median over the stars, and the root mean posterior variance, are the floor a perfect
amortised posterior would reach on these stars; the model's own RMSE (flow draws, and after
importance sampling) is printed beside them.
"""
from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=None, help="exported model (default: the shipped one)")
    ap.add_argument("--stars", type=int, default=30)
    ap.add_argument("--band-set", default="all", help="all, gaia_2mass_wise, gaia or random")
    ap.add_argument("--steps", type=int, default=3000, help="emcee steps per walker")
    ap.add_argument("--burn", type=int, default=1000)
    ap.add_argument("--samples", type=int, default=2000, help="model draws per star")
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()

    import numpy as np

    from irisml_tf.data.testsets import simulate_test_sets
    from irisml_tf.inference import metrics
    from irisml_tf.inference.mcmc import ChainOptions, LogPosterior, mcmc_reference
    from irisml_tf.physics.simulator import PARAM_NAMES
    from irisml_tf.serving import load_model

    model = load_model(args.model)
    sim, prior = model.physics()
    theta, sets = simulate_test_sets(sim, prior, model.observation, args.stars, args.seed, [args.band_set])
    x = sets[args.band_set]
    npe = model.run(x["band_index"], x["mag"], x["mag_err"], args.samples, seed=args.seed)
    log_post = LogPosterior(sim, prior, model.observation.sys_floor)
    chain = ChainOptions(nsteps=args.steps, burn=args.burn)
    med, std, taus, t0 = [], [], [], time.perf_counter()
    print(f"{args.stars} stars, band set {args.band_set}, emcee 32 walkers × {args.steps} steps "
          f"(burn {args.burn}), model {model.path} (step {model.meta.training.step})")
    for i in range(args.stars):
        res = mcmc_reference(log_post, x["band_index"][i], x["mag"][i], x["mag_err"][i], chain,
                             npe_samples=npe["samples"][i], npe_weights=npe["weights"][i], init="npe",
                             seed=[args.seed, i]).mcmc
        med.append(np.median(res.samples, axis=0))
        std.append(res.samples.std(axis=0))
        taus.append(float(np.max(res.tau)))
        print(f"  star {i:3d}: teff {theta[i, 0]:7.0f} K, {int((x['band_index'][i] >= 0).sum())} bands, "
              f"MCMC median teff {med[-1][0]:7.0f} logg {med[-1][1]:5.2f} (true {theta[i, 1]:5.2f}), "
              f"max τ {taus[-1]:.0f}{'' if res.converged else ' (not converged)'}, "
              f"model IS efficiency {npe['efficiency'][i]:.3f}")
    med, std = np.array(med), np.array(std)

    rows = {"exact posterior (emcee) median": med, "model, flow draws (before IS) median": npe["q_median"],
            "model, after IS median": npe["median"]}
    print(f"\nRMSE over {args.stars} stars ({time.perf_counter() - t0:.0f} s; median max τ "
          f"{np.median(taus):.0f} steps):")
    print(f"{'':40s}" + "".join(f"{p:>10s}" for p in PARAM_NAMES) + f"{'teff/teff':>11s}")
    for name, est in rows.items():
        print(f"{name:40s}" + "".join(f"{v:10.3f}" for v in metrics.point_errors(est, theta)["rmse"])
              + f"{metrics.relative_rmse(est[:, 0], theta[:, 0]):11.4f}")
    print(f"{'root mean exact posterior variance':40s}"
          + "".join(f"{v:10.3f}" for v in np.sqrt(np.mean(std ** 2, axis=0))))


if __name__ == "__main__":
    main()
