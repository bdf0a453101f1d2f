"""Inference throughput: stars/s and posterior samples/s with importance weights.

    python benchmarks/bench_infer.py                       # the shipped model, 1000 samples/star
    python benchmarks/bench_infer.py --model DIR --stars 64 --samples 1000 --repeats 5

Two paths on the same simulated stars (the test stars of irisml_tf.data.testsets, band set
"random": the model's own prior and observation model, seed fixed):
  library     run_importance_sampling in a tf.function (XLA simulator), the model rebuilt from
              the export's assets/run (the same weights);
  savedmodel  the exported signature through tf.saved_model.load (ExportedModel.run), as
              `irisml-tf infer` and TF Serving run it (no XLA).
Each call does everything per star: N flow samples with log q, simulation, likelihood, prior,
weights, PSIS k̂, summaries and flags. One warm-up call, then the median of --repeats timed calls.
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=None, help="exported model dir (default: the shipped model)")
    ap.add_argument("--stars", type=int, default=64, help="stars per call (default 64)")
    ap.add_argument("--samples", type=int, default=1000, help="posterior samples per star (default 1000)")
    ap.add_argument("--repeats", type=int, default=5, help="timed calls per path (default 5)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    import numpy as np
    import tensorflow as tf

    from irisml_tf.data.testsets import simulate_test_sets
    from irisml_tf.inference.importance import run_importance_sampling
    from irisml_tf.rundir import load_posterior
    from irisml_tf.serving import load_model

    model = load_model(args.model)
    sim, prior = model.physics()
    _, sets = simulate_test_sets(sim, prior, model.observation, args.stars, args.seed, ["random"])
    inputs = sets["random"]
    posterior = load_posterior(model.run_dir)
    sys_floor = model.observation.sys_floor

    @tf.function(reduce_retracing=True)
    def library(band_index, mag, mag_err, seed):
        out = run_importance_sampling(posterior, sim, prior, {"band_index": band_index, "mag": mag,
                                                              "mag_err": mag_err},
                                      args.samples, seed, sys_floor)
        return out["median"], out["ess"], out["khat"]

    def run_library(i):
        return [t.numpy() for t in library(*(tf.constant(inputs[k]) for k in ("band_index", "mag", "mag_err")),
                                           tf.constant([args.seed, i], tf.int32))]

    def run_saved(i):
        return model.run(inputs["band_index"], inputs["mag"], inputs["mag_err"], args.samples,
                         seed=[args.seed, i])

    print(f"irisml-tf inference benchmark: model {model.path} (step {model.meta.training.step}), "
          f"{args.stars} stars × {args.samples} samples per call, median of {args.repeats}, "
          f"TF {tf.__version__}, {os.cpu_count()} CPUs, "
          f"mean {np.mean((inputs['band_index'] >= 0).sum(1)):.1f} bands/star")
    for name, fn in (("library", run_library), ("savedmodel", run_saved)):
        fn(0)  # trace / warm up
        times = []
        for i in range(args.repeats):
            t0 = time.perf_counter()
            fn(i + 1)
            times.append(time.perf_counter() - t0)
        med = statistics.median(times)
        print(f"{name:10s}: {med * 1e3:8.1f} ms/call (runs {', '.join(f'{t:.3f}' for t in times)} s) → "
              f"{args.stars / med:9.1f} stars/s, {args.stars * args.samples / med:.3g} samples/s")


if __name__ == "__main__":
    main()
