"""Interval coverage against the target ESS: how calibrated the engine's posteriors are at each target.

    python benchmarks/bench_coverage_ess.py                      # 1024 G+2MASS+WISE stars, ESS 300 1000 3000 6000
    python benchmarks/bench_coverage_ess.py --stars 256 --set all --target-ess 300 1000

The same stars (`irisml-tf evaluate`'s generator: the model's prior and observation model, seed
--data-seed) and the same per-star seeds at every target, through the library engine
(``run_engine`` in a tf.function, batches of 64, 1000 returned draws per star). The draw budget is
the model's, or 40/3 draws per unit of target ESS where that is more (ESS 3000: 40 000, 6000:
80 000). Printed per target: the share of stars that reached it, the median ESS per target
evaluation, k̂ > 0.7, the median draws per star, ms per star (tracing included, one pass), and per
parameter the 68 % coverage (nominal 0.68) and the share of truths outside the central 95 %
(nominal 0.05) from the truths' PIT under the returned draws. A coverage of n stars has a
standard error of about √(0.22 / n).
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

BATCH = 64


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=None, help="exported model dir (default: the shipped model)")
    ap.add_argument("--stars", type=int, default=1024)
    ap.add_argument("--set", default="gaia_2mass_wise", help="a band set of `irisml-tf evaluate`")
    ap.add_argument("--target-ess", type=float, nargs="+", default=[300.0, 1000.0, 3000.0, 6000.0])
    ap.add_argument("--data-seed", type=int, default=5)
    ap.add_argument("--seed", type=int, default=7, help="engine seed")
    args = ap.parse_args()

    import numpy as np
    import tensorflow as tf

    from irisml_tf.data.testsets import simulate_test_sets
    from irisml_tf.inference.engine import run_engine
    from irisml_tf.inference.metrics import coverage_from_pit, pit
    from irisml_tf.rowseed import call_seeds
    from irisml_tf.serving import load_model

    model = load_model(args.model)
    sim, prior = model.physics()
    truth, sets = simulate_test_sets(sim, prior, model.observation, args.stars, args.data_seed, [args.set])
    x, posterior = sets[args.set], model.posterior()
    print(f"coverage vs target ESS: model {model.path}, {args.stars} stars, band set {args.set}, "
          f"data seed {args.data_seed}, engine seed {args.seed}")
    print("cov68 and outside-95 % per parameter: teff logg mh av rv")
    for target in args.target_ess:
        budget = max(model.meta.engine_options.max_draws, int(round(target * 40 / 3)))
        options = dataclasses.replace(model.meta.engine_options, max_draws=budget)

        @tf.function(reduce_retracing=True)
        def engine(band_index, mag, mag_err, seed, options=options, target=target):
            out = run_engine(posterior, sim, prior, {"band_index": band_index, "mag": mag, "mag_err": mag_err},
                             seed, model.observation.sys_floor, options=options, num_samples=1000,
                             target_ess=target)
            return {k: out[k] for k in ("samples", "weights", "ess", "n_target_evals", "khat", "converged", "n_draws")}

        t0, parts = time.perf_counter(), []
        for start in range(0, args.stars, BATCH):
            rows = slice(start, start + BATCH)
            seeds = call_seeds([args.seed, start], len(x["mag"][rows]))
            out = engine(*(tf.constant(x[k][rows]) for k in ("band_index", "mag", "mag_err")), tf.constant(seeds))
            parts.append({k: v.numpy() for k, v in out.items()})
        seconds = time.perf_counter() - t0
        o = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
        (cov, cov95), _ = coverage_from_pit(pit(o["samples"], truth, o["weights"]), (0.68, 0.95))
        out95 = 1.0 - cov95
        print(f"ESS {target:6.0f} (budget {budget}): reached {o['converged'].mean():.3f}, "
              f"ESS/eval {np.median(o['ess'] / o['n_target_evals']):.3f}, k̂ > 0.7 {np.mean(o['khat'] > 0.7):.3f}, "
              f"median draws {np.median(o['n_draws']):.0f}, {1e3 * seconds / args.stars:.0f} ms/star\n"
              f"  cov68 {' '.join(f'{v:.3f}' for v in cov)}   outside 95 % {' '.join(f'{v:.3f}' for v in out95)}",
              flush=True)


if __name__ == "__main__":
    main()
