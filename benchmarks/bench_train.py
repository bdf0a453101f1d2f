"""Training throughput: steps/s of `irisml-tf train` for a config on this machine.

    python benchmarks/bench_train.py --config configs/quick.yaml
    python benchmarks/bench_train.py --config configs/default.yaml --windows 3 --window 10

Builds the run's objects (TrainingSession: stream, model, optimiser; no run directory, no
validation or checkpoints), runs `--warmup` steps (tracing, pipeline fill), then times
`--windows` consecutive windows of `--window` steps each through the same Keras `fit` loop the
driver uses, data simulated on the fly. Prints each window's rate, then, last, the median
steps/s and examples/s.
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", required=True)
    ap.add_argument("--set", dest="overrides", action="append", default=[],
                    metavar="KEY=VALUE")
    ap.add_argument("--warmup", type=int, default=20, help="untimed steps first")
    ap.add_argument("--window", type=int, default=50, help="steps per timed window")
    ap.add_argument("--windows", type=int, default=5, help="number of timed windows")
    ap.add_argument("--cpu-replicas", type=int, default=1,
                    help="logical CPU devices (MirroredStrategy when > 1)")
    args = ap.parse_args()
    if args.warmup < 1 or args.window < 1 or args.windows < 1:
        ap.error("--warmup, --window and --windows must be >= 1")

    from irisml_tf.training import TrainingSession, split_cpu
    from irisml_tf.training.config import load_config

    if args.cpu_replicas > 1:
        split_cpu(args.cpu_replicas)
    import keras
    import tensorflow as tf

    config = load_config(args.config, args.overrides)
    session = TrainingSession(config)
    marks: list[float] = []

    class Clock(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            float(logs["nll"])  # wait for the step
            marks.append(time.perf_counter())

    total = args.warmup + args.window * args.windows
    t = config["training"]
    m = config["model"]
    print(f"config {args.config} {' '.join(args.overrides)}: batch {t['batch_size']}, "
          f"embed {m['embed_dim']}×{m['num_blocks']} blocks, {m['flow_blocks']} flow blocks "
          f"{m['made_hidden']}, {session.num_parameters()} parameters, "
          f"{session.num_replicas} replica(s), "
          f"{tf.config.threading.get_intra_op_parallelism_threads() or os.cpu_count()} threads")
    session.fit(total, 0, [Clock()])
    rates = []
    for w in range(args.windows):
        a = marks[args.warmup - 1 + w * args.window]
        b = marks[args.warmup - 1 + (w + 1) * args.window]
        rates.append(args.window / (b - a))
        print(f"window {w + 1}: {rates[-1]:.2f} steps/s")
    med = statistics.median(rates)
    print(f"steps/s: {med:.2f} (median of {args.windows} windows of {args.window} steps), "
          f"examples/s: {med * t['batch_size']:.0f}")


if __name__ == "__main__":
    main()
