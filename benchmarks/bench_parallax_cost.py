"""What a parallax costs: stars/s of the exported model with and without a 1 % parallax.

    python benchmarks/bench_parallax_cost.py [--model DIR] [--stars 32] [--target-ess 300]

The model's test stars (Gaia + 2MASS + WISE, irisml_tf.data.testsets), one call per setting after
a warm-up, the median of --repeats timed calls; in the second every star gets its own simulated
parallax with a 1 % error (irisml_tf.data.testsets.simulate_test_parallaxes: the parallax its
distance and the model's mass prior imply, so the parallax agrees with the photometry).
"""
from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=None)
    ap.add_argument("--stars", type=int, default=32)
    ap.add_argument("--target-ess", type=float, default=300.0)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    import numpy as np

    from irisml_tf.data.testsets import simulate_test_parallaxes, simulate_test_sets
    from irisml_tf.serving import load_model

    model = load_model(args.model)
    sim, prior = model.physics()
    theta, sets = simulate_test_sets(sim, prior, model.observation, args.stars, 11, ["gaia_2mass_wise"])
    x = sets["gaia_2mass_wise"]
    p = simulate_test_parallaxes(sim, theta, x["mu"], 0.01, 11, model.meta.mass_model)
    plx = {"parallax": p["parallax"], "parallax_error": p["parallax_error"], "parallax_zero_point": 0.0}
    for label, kw in (("no parallax", {}), ("1 % parallax", plx)):
        def call(i, kw=kw):
            return model.run(x["band_index"], x["mag"], x["mag_err"], 256, i, target_ess=args.target_ess, **kw)

        call(0)
        times, out = [], None
        for i in range(args.repeats):
            t0 = time.perf_counter()
            out = call(i + 1)
            times.append(time.perf_counter() - t0)
        med = float(np.median(times))
        print(f"{label:13s}: {args.stars / med:6.1f} stars/s (median of {np.round(times, 2).tolist()} s per "
              f"{args.stars} stars), median draws {np.median(out['n_draws']):.0f}")


if __name__ == "__main__":
    main()
