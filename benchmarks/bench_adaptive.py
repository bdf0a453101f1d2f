"""The adaptive engine on simulated stars: how many reach the target ESS, at what cost, and how well
calibrated the returned posteriors are, per band set and target ESS.

    python benchmarks/bench_adaptive.py                                  # 1024 G+2MASS+WISE stars, ESS 300 1000 3000
    python benchmarks/bench_adaptive.py --stars 256 --sets all gaia_2mass_wise --target-ess 1000 300
    python benchmarks/bench_adaptive.py --option freeze_at=Infinity     # an engine setting changed (JSON value)

Stars: `irisml-tf evaluate`'s generator (the model's prior, THE simulator, its observation model;
seed --data-seed), the same stars and per-star seeds at every target. The engine is what `infer`
runs: ``run_engine`` in a tf.function with the model's engine settings (``--option`` overrides
one), batches of 64, 1000 returned draws per star. The draw budget is the model's, or 40/3 draws
per unit of target ESS where that is more (ESS 3000: 40 000), or --max-draws.

Printed per set and target: the share of stars that reached it, the median ESS per target
evaluation (all rounds, gradient steps and Hessians counted), k̂ > 0.7, stars with > 1 located
mode, median draws and rounds, ms per star (after a warm-up batch that traces the graph), and per
parameter the 68 % coverage (nominal 0.68) and the share of truths outside the central 95 %
(nominal 0.05), from the truths' PIT under the returned draws. A coverage of n stars has a
standard error of about √(0.22 / n).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

BATCH = 64
KEYS = ("samples", "weights", "ess", "n_target_evals", "khat", "converged", "n_draws", "rounds", "n_modes")


def engine_options(model, overrides):
    """The model's engine settings with ``NAME=VALUE`` overrides (JSON values)."""
    return dataclasses.replace(model.meta.engine_options,
                               **{k: json.loads(v) for k, v in (o.split("=", 1) for o in overrides)})


def make_engine(model, options, keys=KEYS, num_samples: int = 1000):
    """The library path: a tf.function (band_index, mag, mag_err, seeds, target_ess) → the outputs
    ``keys`` of ``run_engine`` (XLA simulator, the export's weights rebuilt from assets/run)."""
    import tensorflow as tf

    from irisml_tf.inference.engine import run_engine

    sim, prior = model.physics()
    posterior = model.posterior()

    @tf.function(reduce_retracing=True)
    def engine(band_index, mag, mag_err, seeds, target):
        out = run_engine(posterior, sim, prior, {"band_index": band_index, "mag": mag, "mag_err": mag_err},
                         seeds, model.observation.sys_floor, options=options, num_samples=num_samples,
                         target_ess=target)
        return {k: out[k] for k in keys}
    return engine


def run_set(engine, x, seed: int, target: float):
    """Every star of band set ``x`` in batches: (outputs, seconds per star after the first batch)."""
    import numpy as np
    import tensorflow as tf

    from irisml_tf.rowseed import call_seeds

    n, parts, seconds = len(x["mag"]), [], 0.0
    target = tf.constant(target, tf.float32)
    for start in range(0, n, BATCH):
        rows = slice(start, start + BATCH)
        args = [tf.constant(x[k][rows]) for k in ("band_index", "mag", "mag_err")]
        size = len(args[0])
        if start == 0:
            engine(*args, tf.constant(call_seeds([seed + 1, start], size)), target)  # trace
        t0 = time.perf_counter()
        out = engine(*args, tf.constant(call_seeds([seed, start], size)), target)
        parts.append({k: v.numpy() for k, v in out.items()})
        seconds += time.perf_counter() - t0
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}, seconds / n


def report(name, target, budget, o, truth, sec_per_star) -> None:
    import numpy as np

    from irisml_tf.inference.metrics import coverage_from_pit, pit

    (cov, cov95), _ = coverage_from_pit(pit(o["samples"], truth, o["weights"]), (0.68, 0.95))
    print(f"[{name}] ESS {target:g} (budget {budget}): reached {o['converged'].mean():.3f}, "
          f"ESS/eval {np.median(o['ess'] / o['n_target_evals']):.3f}, k̂ > 0.7 {np.mean(o['khat'] > 0.7):.3f}, "
          f">1 mode {np.mean(o['n_modes'] > 1):.3f}, median draws {np.median(o['n_draws']):.0f}, "
          f"rounds {np.median(o['rounds']):.0f} (max {o['rounds'].max()}), {1e3 * sec_per_star:.1f} ms/star\n"
          f"    cov68 {' '.join(f'{v:.3f}' for v in cov)}   outside 95 % {' '.join(f'{v:.3f}' for v in 1.0 - cov95)}"
          "   (teff logg mh av rv)", flush=True)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=None, help="exported model dir (default: the shipped model)")
    ap.add_argument("--stars", type=int, default=1024, help="stars per band set (default 1024)")
    ap.add_argument("--sets", nargs="+", default=["gaia_2mass_wise"], help="band sets of `irisml-tf evaluate`")
    ap.add_argument("--target-ess", type=float, nargs="+", default=[300.0, 1000.0, 3000.0])
    ap.add_argument("--max-draws", type=int, default=None, help="draw budget per star (default: see above)")
    ap.add_argument("--data-seed", type=int, default=5)
    ap.add_argument("--seed", type=int, default=7, help="engine seed")
    ap.add_argument("--option", action="append", default=[], metavar="NAME=VALUE",
                    help="override an engine setting (JSON value, e.g. freeze_at=Infinity; repeatable)")
    args = ap.parse_args(argv)

    from irisml_tf.data.testsets import simulate_test_sets
    from irisml_tf.serving import load_model

    model = load_model(args.model)
    sim, prior = model.physics()
    truth, sets = simulate_test_sets(sim, prior, model.observation, args.stars, args.data_seed, args.sets)
    base = engine_options(model, args.option)
    print(f"adaptive engine: model {model.path}, {args.stars} stars per set, data seed {args.data_seed}, "
          f"engine seed {args.seed}, {os.cpu_count()} CPUs" + (f"; {' '.join(args.option)}" if args.option else ""))
    for target in args.target_ess:
        budget = args.max_draws or max(base.max_draws, int(round(target * 40 / 3)))
        engine = make_engine(model, dataclasses.replace(base, max_draws=budget))
        for name in args.sets:
            out, sec = run_set(engine, sets[name], args.seed, target)
            report(name, target, budget, out, truth, sec)


if __name__ == "__main__":
    main()
