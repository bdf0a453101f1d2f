"""The adaptive importance sampler on the shipped model: how many stars reach the target ESS, at
what cost, and how well calibrated the weighted posteriors are.

    python benchmarks/bench_adaptive.py [--model DIR] [--stars 120] [--sets all gaia_2mass_wise]
        [--target-ess 1000 200] [--batch 64] [--seed 0] [--max-draws 20000]

Stars: `irisml-tf evaluate`'s test stars (the model's prior, THE simulator, its observation
model) in each band set. Per band set and target ESS, the engine
(:func:`irisml_tf.inference.adaptive.adaptive_importance_sampling` on
:func:`irisml_tf.inference.posterior_target.posterior_problem`, the model's training prior as
the target's prior) runs in batches inside one ``tf.function``; printed: fraction of stars
reaching the target, median ESS, median ESS per target evaluation (all rounds, gradient steps
and Hessians counted), median draws and rounds, k̂ > 0.7 fraction, stars with > 1 located mode,
68 % / 90 % coverage of the central weighted intervals per parameter, and ms per star (wall time
of the batched calls after a warm-up call that traces the graph, divided by the stars).
Plain flow IS on the same stars: ``--option n0=1000 --option max_rounds=0``.
"""
from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def make_runner(model, sim, prior, sys_floor, options):
    """A tf.function (band_index, mag, mag_err, keys, seed) → (θ draws, AdaptiveResult)."""
    import tensorflow as tf

    from irisml_tf.inference.adaptive import adaptive_importance_sampling, star_seeds
    from irisml_tf.inference.posterior_target import posterior_problem

    @tf.function(reduce_retracing=True)
    def run(band_index, mag, mag_err, keys, seed):
        p = posterior_problem(model, sim, prior, {"band_index": band_index, "mag": mag,
                                                  "mag_err": mag_err}, sys_floor)
        res = adaptive_importance_sampling(p.log_target, p.flow_sample, p.conditions,
                                           star_seeds(seed, keys), 5, options)
        return p.theta(res.draws), res
    return run


def coverage(draws, weights, truth, level):
    """Fraction of stars (rows with weight) whose truth lies in the central ``level`` interval."""
    import numpy as np

    from irisml_tf.inference.metrics import pit

    u = pit(draws, truth, weights)
    ok = np.isfinite(u[:, 0])
    return (np.abs(u[ok] - 0.5) <= level / 2).mean(0)


def run_set(runner, x, theta, batch: int, seed: int, target: float):
    import numpy as np
    import tensorflow as tf

    n = len(theta)
    keys = np.arange(n, dtype=np.int64)
    def args(sl):
        return (tf.constant(x["band_index"][sl]), tf.constant(x["mag"][sl]),
                           tf.constant(x["mag_err"][sl]), tf.constant(keys[sl]),
                           tf.constant([seed, 7], tf.int32))
    t0 = time.perf_counter()
    for s in range(0, n, batch):  # trace, and XLA-compile the simulator for the shapes met
        runner(*args(slice(s, s + batch)))
    t_warm = time.perf_counter() - t0
    out, wall, cpu = [], 0.0, 0.0
    for s in range(0, n, batch):
        t0, c0 = time.perf_counter(), time.process_time()
        th, r = runner(*args(slice(s, s + batch)))
        wall += time.perf_counter() - t0
        cpu += time.process_time() - c0
        out.append((th.numpy(), {k: v.numpy() for k, v in r._asdict().items() if k != "draws"}))
    res = {k: np.concatenate([o[1][k] for o in out]) for k in out[0][1]}
    draws = np.concatenate([o[0] for o in out])
    return draws, res, wall, cpu, t_warm


def report(name, target, draws, res, theta, wall, cpu, t_first):
    import numpy as np

    n = len(theta)
    ess, evals = res["ess"], res["n_target_evals"]
    c68 = coverage(draws, res["weights"], theta, 0.68)
    c90 = coverage(draws, res["weights"], theta, 0.90)
    print(f"[{name}] target ESS {target:g}: {n} stars; reach target {np.mean(res['converged']):.3f}; "
          f"median ESS {np.median(ess):.0f}; median ESS/eval {np.median(ess / evals):.3f} "
          f"(pooled {ess.sum() / evals.sum():.3f}); median draws {np.median(res['n_draws']):.0f}, "
          f"rounds {np.median(res['rounds']):.0f} (max {res['rounds'].max()}); "
          f"k̂>0.7 {np.mean(res['khat'] > 0.7):.3f}; >1 mode {np.mean(res['n_modes'] > 1):.3f}; "
          f"{wall / n * 1e3:.1f} ms/star wall, {cpu / n * 1e3:.1f} ms/star CPU "
          f"(first pass, with tracing and compiling: {t_first:.0f} s)")
    print(f"    coverage 68%: {' '.join(f'{c:.2f}' for c in c68)}   90%: {' '.join(f'{c:.2f}' for c in c90)}"
          "   (teff logg mh av rv)")
    short = np.flatnonzero(~res["converged"])
    if short.size:
        print(f"    short of target: stars {short[:12].tolist()}{' …' if short.size > 12 else ''}, "
              f"teff {np.round(theta[short[:12], 0]).tolist()}, ESS {np.round(ess[short[:12]]).tolist()}")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=None)
    ap.add_argument("--stars", type=int, default=120)
    ap.add_argument("--sets", nargs="+", default=["all", "gaia_2mass_wise"])
    ap.add_argument("--target-ess", type=float, nargs="+", default=[1000.0, 200.0])
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-draws", type=int, default=20000)
    ap.add_argument("--option", action="append", default=[],
                    help="extra AdaptiveOptions field, NAME=VALUE (Python literal)")
    args = ap.parse_args(argv)

    import ast
    import dataclasses

    from irisml_tf.data.testsets import simulate_test_sets
    from irisml_tf.inference.adaptive import AdaptiveOptions
    from irisml_tf.serving import load_model

    exported = load_model(args.model)
    sim, prior = exported.physics()
    model = exported.posterior()
    sys_floor = exported.observation.sys_floor
    theta, sets = simulate_test_sets(sim, prior, exported.observation.to_dict(), args.stars,
                                     args.seed, args.sets)
    extra = {k: ast.literal_eval(v) for k, v in (o.split("=", 1) for o in args.option)}
    print(f"model {exported.path}; {args.stars} stars per set; batch {args.batch}; "
          f"cores {os.cpu_count()}; options {extra}")
    for target in args.target_ess:
        opts = dataclasses.replace(AdaptiveOptions(), target_ess=target, max_draws=args.max_draws, **extra)
        runner = make_runner(model, sim, prior, sys_floor, opts)
        for name in args.sets:
            draws, res, wall, cpu, t_first = run_set(runner, sets[name], theta, args.batch,
                                                     args.seed, target)
            report(name, target, draws, res, theta, wall, cpu, t_first)


if __name__ == "__main__":
    main()
