"""Training-stream throughput: simulated, observed examples per second through tf.data.

    python benchmarks/bench_stream.py [--batch 512] [--batches 200] [--runs 5]

Prints each run and, last, the median as `<examples/s> examples/s`.
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=512)
    ap.add_argument("--batches", type=int, default=200)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    from irisml_tf.data.observation import ObservationModel
    from irisml_tf.data.stream import SimulationStream
    from irisml_tf.physics.prior import Prior
    from irisml_tf.physics.simulator import Simulator

    stream = SimulationStream(Prior(), Simulator(), ObservationModel(), args.batch, seed=0)
    it = iter(stream.dataset())
    for _ in range(20):  # warm-up: tracing, XLA compile, prefetch buffers
        next(it)
    rates = []
    for run in range(args.runs):
        t0 = time.perf_counter()
        for _ in range(args.batches):
            x, theta = next(it)
        theta.numpy()
        rates.append(args.batches * args.batch / (time.perf_counter() - t0))
        print(f"run {run}: {rates[-1]:.3e} examples/s")
    print(f"{statistics.median(rates):.3e} examples/s")


if __name__ == "__main__":
    main()
