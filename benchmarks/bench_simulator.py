"""Simulated stars per second: θ → 25 magnitudes incl. extinction, batch 65 536, on this machine.

    python benchmarks/bench_simulator.py [--batch 65536] [--runs 5]

θ comes from the prior; each run times --reps calls after a warm-up (XLA compile) and the median of
--runs runs is printed last as `<stars/s> stars/s`.
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=65536)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--reps", type=int, default=10)
    args = ap.parse_args()
    import tensorflow as tf

    from irisml_tf.physics.prior import Prior
    from irisml_tf.physics.simulator import Simulator

    sim, prior = Simulator(), Prior()
    theta = prior.sample(args.batch, 0)
    mags, mask = sim(theta)  # compile
    print(f"threads: intra {tf.config.threading.get_intra_op_parallelism_threads()} "
          f"inter {tf.config.threading.get_inter_op_parallelism_threads()}, cores {os.cpu_count()}")
    rates = []
    for run in range(args.runs):
        t0 = time.perf_counter()
        for _ in range(args.reps):
            mags, mask = sim(theta)
            mags.numpy()
        dt = time.perf_counter() - t0
        rates.append(args.reps * args.batch / dt)
        print(f"run {run}: {rates[-1]:.3e} stars/s")
    print(f"{statistics.median(rates):.3e} stars/s")


if __name__ == "__main__":
    main()
