"""Inference throughput of the adaptive engine: stars/s at a target ESS.

    python benchmarks/bench_infer.py                       # the shipped model, ESS 1000 and 300
    python benchmarks/bench_infer.py --model DIR --stars 64 --target-ess 1000 300 --sets all random

Two paths on the same simulated stars (the test stars of irisml_tf.data.testsets: the model's own
prior and observation model, seed fixed; band sets as `irisml-tf evaluate` names them):
  library     run_engine in a tf.function (XLA simulator), the model rebuilt from the export's
              assets/run (the same weights);
  savedmodel  the exported signature through tf.saved_model.load (ExportedModel.run), as
              `irisml-tf infer` and TF Serving run it (no XLA).
Each call does everything per star: flow draws, mode search, adaptive rounds until the ESS
target or the draw budget, PSIS k̂, summaries, 256 resampled draws and the flags. One warm-up
call, then the median of --repeats timed calls; also the share of stars that reached the target
and the median draws per star.
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
    ap.add_argument("--target-ess", type=float, nargs="+", default=[1000.0, 300.0])
    ap.add_argument("--sets", nargs="+", default=["all", "random"], help="band sets (default all random)")
    ap.add_argument("--repeats", type=int, default=3, help="timed calls per path (default 3)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--paths", nargs="+", default=["library", "savedmodel"], choices=["library", "savedmodel"])
    ap.add_argument("--option", action="append", default=[], metavar="NAME=VALUE",
                    help="override an engine option on the library path (e.g. alpha=0.2; repeatable)")
    args = ap.parse_args()

    import numpy as np
    import tensorflow as tf
    from bench_adaptive import engine_options, make_engine  # the library path, shared with that benchmark

    from irisml_tf.data.testsets import simulate_test_sets
    from irisml_tf.rowseed import call_seeds
    from irisml_tf.serving import load_model

    model = load_model(args.model)
    sim, prior = model.physics()
    _, sets = simulate_test_sets(sim, prior, model.observation, args.stars, args.seed, args.sets)
    library = make_engine(model, engine_options(model, args.option), ("median", "ess", "n_draws", "converged"), 256)

    print(f"irisml-tf inference benchmark: model {model.path} (step {model.meta.training.step}), "
          f"{args.stars} stars per call, median of {args.repeats}, TF {tf.__version__}, {os.cpu_count()} CPUs"
          + (f"; library options {' '.join(args.option)}" if args.option else ""))
    for name, x in sets.items():
        print(f"band set {name}: mean {np.mean((x['band_index'] >= 0).sum(1)):.1f} bands/star")
        for target in args.target_ess:
            def run_library(i, x=x, target=target):
                out = library(*(tf.constant(x[k]) for k in ("band_index", "mag", "mag_err")),
                              tf.constant(call_seeds([args.seed, i], args.stars)), tf.constant(target, tf.float32))
                return {k: v.numpy() for k, v in out.items()}

            def run_saved(i, x=x, target=target):
                return model.run(x["band_index"], x["mag"], x["mag_err"], 256, seed=[args.seed, i],
                                 target_ess=target)

            for path, fn in ((p, {"library": run_library, "savedmodel": run_saved}[p]) for p in args.paths):
                fn(0)  # trace / warm up
                times, outs = [], []
                for i in range(args.repeats):
                    t0 = time.perf_counter()
                    outs.append(fn(i + 1))
                    times.append(time.perf_counter() - t0)
                med = statistics.median(times)
                reach = np.mean([o["converged"].mean() for o in outs])
                draws = np.median(np.concatenate([o["n_draws"] for o in outs]))
                print(f"  ESS {target:6.0f} {path:10s}: {med / args.stars * 1e3:7.1f} ms/star "
                      f"{args.stars / med:7.1f} stars/s (runs {', '.join(f'{t:.1f}' for t in times)} s); "
                      f"reached {100 * reach:5.1f} %, median draws {draws:.0f}")


if __name__ == "__main__":
    main()
