"""The exact posterior (emcee) as referee: the engine's posterior star by star, and the accuracy floor.

    python benchmarks/bench_information_floor.py                  # shipped model, 30 stars, all 25 bands
    python benchmarks/bench_information_floor.py --stars 50 --band-set gaia_2mass_wise
    python benchmarks/bench_information_floor.py --band-set gaia_2mass_wise --parallax 0.1

The accuracy targets of `irisml-tf evaluate` (e.g. log g RMSE ≤ 0.5 dex) can be out of reach of the
data themselves. For each simulated star (the model's prior and observation model, the same
generator as `evaluate`), emcee samples the exact posterior under the same likelihood and prior
(:func:`irisml_tf.inference.mcmc.mcmc_reference`: walkers started from the model's
draws from the engine, 32 walkers × --steps, first --burn discarded, extended until converged).

Star by star, per parameter: |engine median − exact median| / exact σ and the ratio of the
engine's 68 % interval width (p84 − p16) to the exact one; the median over stars of each is
printed (the engine at --target-ess, default 1000, under the model's training prior). With
--parallax (``gaia`` or a fractional error), every star also has its simulated parallax
(:func:`irisml_tf.data.testsets.simulate_test_parallaxes`) in both the engine and the chain.

The RMSE of the exact posterior median over the stars, and the root mean posterior variance, are
the floor a perfect amortised posterior would reach on these stars; the model's own RMSE (the
flow's round-0 draws, and the engine's weighted draws) is printed beside them.
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
    ap.add_argument("--samples", type=int, default=2000, help="engine draws returned per star (MCMC start)")
    ap.add_argument("--target-ess", type=float, default=1000.0)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--parallax", default=None, help="simulated parallax errors: gaia or a fraction (default none)")
    args = ap.parse_args()

    import numpy as np

    from irisml_tf.data.testsets import simulate_test_parallaxes, simulate_test_sets
    from irisml_tf.inference import metrics
    from irisml_tf.inference.mcmc import ChainOptions, LogPosterior, mcmc_reference
    from irisml_tf.physics.simulator import PARAM_NAMES
    from irisml_tf.serving import load_model

    model = load_model(args.model)
    sim, prior = model.physics()
    theta, sets = simulate_test_sets(sim, prior, model.observation, args.stars, args.seed, [args.band_set])
    x = sets[args.band_set]
    mass_prior = model.meta.mass_model
    none = np.full(args.stars, np.nan, np.float32)
    plx = {"parallax": none, "parallax_error": none}
    if args.parallax is not None:
        plx = simulate_test_parallaxes(sim, theta, x["mu"], args.parallax, args.seed, mass_prior)
    npe = model.run(x["band_index"], x["mag"], x["mag_err"], args.samples, seed=args.seed,
                    target_ess=args.target_ess, parallax=plx["parallax"], parallax_error=plx["parallax_error"],
                    parallax_zero_point=0.0)
    log_post = LogPosterior(sim, prior, model.observation.sys_floor, mass_prior=mass_prior)
    chain = ChainOptions(nsteps=args.steps, burn=args.burn)
    med, std, width, taus, t0 = [], [], [], [], time.perf_counter()
    print(f"{args.stars} stars, band set {args.band_set}, parallax errors {args.parallax or 'none'}, "
          f"emcee 32 walkers × {args.steps} steps "
          f"(burn {args.burn}), model {model.path} (step {model.meta.training.step})")
    for i in range(args.stars):
        res = mcmc_reference(log_post, x["band_index"][i], x["mag"][i], x["mag_err"][i], chain,
                             npe_samples=npe["samples"][i], npe_weights=npe["weights"][i], init="npe",
                             seed=[args.seed, i],
                             conditions={"plx": plx["parallax"][i], "plx_err": plx["parallax_error"][i]}).mcmc
        med.append(np.median(res.samples, axis=0))
        std.append(res.samples.std(axis=0))
        lo, hi = np.percentile(res.samples, [16, 84], axis=0)
        width.append(hi - lo)
        taus.append(float(np.max(res.tau)))
        print(f"  star {i:3d}: teff {theta[i, 0]:7.0f} K, {int((x['band_index'][i] >= 0).sum())} bands, "
              f"MCMC median teff {med[-1][0]:7.0f} logg {med[-1][1]:5.2f} (true {theta[i, 1]:5.2f}), "
              f"max τ {taus[-1]:.0f}{'' if res.converged else ' (not converged)'}, "
              f"engine ESS {npe['ess'][i]:.0f} in {npe['n_draws'][i]} draws")
    med, std, width = np.array(med), np.array(std), np.array(width)
    dmed = np.abs(npe["median"] - med) / std
    ratio = (npe["p84"] - npe["p16"]) / width
    print(f"\nengine vs exact posterior, median over {args.stars} stars (target: |Δ median| ≤ 0.1 σ, widths "
          "within 10 %):")
    print(f"{'':40s}" + "".join(f"{p:>10s}" for p in PARAM_NAMES))
    print(f"{'|Δ median| / σ_exact':40s}" + "".join(f"{v:10.3f}" for v in np.median(dmed, 0)))
    print(f"{'68 % width engine / exact':40s}" + "".join(f"{v:10.3f}" for v in np.median(ratio, 0)))
    print(f"{'  90th percentile of |Δ median| / σ':40s}" + "".join(f"{v:10.3f}" for v in np.percentile(dmed, 90, 0)))

    rows = {"exact posterior (emcee) median": med, "model, flow draws (round 0) median": npe["q_median"],
            "model, engine median": npe["median"]}
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
