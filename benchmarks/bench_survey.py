"""Survey throughput: stars/s of `irisml-tf survey` on a LocalCluster of 1 and 2 workers against
`irisml-tf infer` on the same rows, the cost of each partition, and what Gaia DR3 would take.

    python benchmarks/bench_survey.py                    # 2000 stars, 1000 samples, shipped model
    python benchmarks/bench_survey.py --stars 4000 --partition-rows 500 --samples 1000

The stars are FGK-like magnitudes under the surveys' column names (Gaia without errors, 2MASS,
WISE W1; the cost per star does not depend on the values) in a 10° × 10° patch of sky, written
as Parquet (for infer) and as a HATS catalogue of about --partition-rows rows per partition (for
survey). Timings go through the app functions the commands call (irisml_tf.app.infer /
irisml_tf.app.survey):

  infer           infer_catalog on the Parquet file: stars / seconds of inference (one process);
  survey W        a LocalCluster of W workers × (cores / W) TensorFlow threads: `start` = cluster up
                  and the model loaded in every worker, `write` = write_survey (map_partitions,
                  write_catalog, the status count), stars/s = stars / write;
  per partition   one warm worker (after a first write), --overhead-stars rows as 1 partition and
                  as partitions of 32 rows (two full model calls each at 1000 samples, so the
                  calls are the same): (t_many − t_one) / (partitions − 1).

Then the Gaia DR3 arithmetic (1.8e9 rows) on 1000 cores from the per-core rate of the faster
survey layout (both use every core of this machine).
The machine may be shared: the load average is printed with the figures.
"""
from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

GAIA_ROWS = 1.8e9
CLUSTER_CORES = 1000


def stars(n: int, seed: int):
    """FGK-like stars, G = 10-17, colours from a redness c in 0-1.5, under the surveys' names."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    g, c = rng.uniform(10.0, 17.0, n), rng.uniform(0.0, 1.5, n)
    j = g - 1.1 - 0.8 * c
    h = j - 0.3 - 0.2 * c
    k = h - 0.08 - 0.05 * c
    df = pd.DataFrame({"source_id": np.arange(n, dtype=np.int64) + 10**15,
                       "ra": rng.uniform(10.0, 20.0, n), "dec": rng.uniform(0.0, 10.0, n),
                       "phot_g_mean_mag": g, "phot_bp_mean_mag": g + 0.35 + 0.3 * c,
                       "phot_rp_mean_mag": g - 0.5 - 0.35 * c, "j_m": j, "h_m": h, "k_m": k, "w1mpro": k - 0.04})
    for col in ("j_msigcom", "h_msigcom", "k_msigcom", "w1sigmpro"):
        df[col] = 0.03
    return df


def write_hats(df, path: Path, partition_rows: int) -> int:
    import lsdb

    cat = lsdb.from_dataframe(df, ra_column="ra", dec_column="dec", partition_rows=partition_rows,
                              margin_threshold=None)
    cat.write_catalog(path, as_collection=False, progress_bar=False)
    return cat.npartitions


def warm(path: str) -> None:
    """Load the model in this worker (``client.run(warm, path)``; the model itself stays there)."""
    from irisml_tf.app.survey import worker_model

    worker_model(path)


def time_survey(hats: Path, out: Path, model, workers: int, threads: int, samples: int) -> tuple[float, float]:
    """(start seconds: cluster up and the model loaded in every worker, write seconds)."""
    from irisml_tf.app.survey import SurveyOptions, dask_client, survey_catalog, write_survey

    t0 = time.perf_counter()
    with dask_client(SurveyOptions(workers=workers, tf_threads=threads)) as client:
        client.run(warm, str(Path(model.path).resolve()))
        t1 = time.perf_counter()
        write_survey(survey_catalog(hats, model, num_samples=samples), out, progress=False)
        t2 = time.perf_counter()
    return t1 - t0, t2 - t1


def partition_overhead(df, tmp: Path, model, samples: int, cores: int) -> tuple[float, int]:
    """Seconds per extra partition (one warm worker) and the partitions of the many-partition run."""
    from irisml_tf.app.survey import SurveyOptions, dask_client, survey_catalog, write_survey

    one, many = tmp / "one", tmp / "many"
    assert write_hats(df, one, len(df)) == 1
    n_many = write_hats(df, many, 32)
    with dask_client(SurveyOptions(workers=1, tf_threads=cores)) as client:
        client.run(warm, str(Path(model.path).resolve()))
        write_survey(survey_catalog(one, model, num_samples=samples), tmp / "warm-up.out", progress=False)
        times = []
        for name in (one, many):
            t0 = time.perf_counter()
            write_survey(survey_catalog(name, model, num_samples=samples), tmp / f"{name.name}.out", progress=False)
            times.append(time.perf_counter() - t0)
    return (times[1] - times[0]) / (n_many - 1), n_many


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=None, help="exported model dir (default: the shipped model)")
    ap.add_argument("--stars", type=int, default=2000, help="rows (default 2000)")
    ap.add_argument("--partition-rows", type=int, default=250, help="rows per HATS partition (default 250)")
    ap.add_argument("--overhead-stars", type=int, default=480, help="rows of the per-partition run (default 480)")
    ap.add_argument("--samples", type=int, default=1000, help="posterior samples per star (default 1000)")
    ap.add_argument("--gaia-rows-per-partition", type=float, default=1e6,
                    help="for the Gaia arithmetic: rows per partition of the input (default 1e6)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    from irisml_tf.app.infer import infer_catalog
    from irisml_tf.app.survey import available_cores
    from irisml_tf.serving import load_model

    model = load_model(args.model)
    cores = available_cores()
    df = stars(args.stars, args.seed)
    tmp = Path(tempfile.mkdtemp(prefix="bench_survey_"))
    df.to_parquet(tmp / "stars.parquet", index=False)
    partitions = write_hats(df, tmp / "stars", args.partition_rows)
    print(f"irisml-tf survey benchmark: {args.stars} stars in {partitions} partitions, {args.samples} samples, "
          f"model {model.path}, {cores} cores, load average {os.getloadavg()[0]:.1f} at start")

    summary = infer_catalog(model, tmp / "stars.parquet", tmp / "infer.parquet", num_samples=args.samples,
                            progress=False)
    infer_rate = summary.rows_per_second
    print(f"infer          : {summary.inference_seconds:7.1f} s inference → {infer_rate:7.1f} stars/s")
    rates = {}
    for workers in (1, 2):
        threads = max(1, cores // workers)
        start, write = time_survey(tmp / "stars", tmp / f"survey{workers}", model, workers, threads, args.samples)
        rates[workers] = args.stars / write
        print(f"survey {workers}x{threads}    : {start:7.1f} s start, {write:7.1f} s write → {rates[workers]:7.1f} "
              f"stars/s ({rates[workers] / infer_rate:.2f} × infer)")
    overhead, n_many = partition_overhead(df.iloc[:args.overhead_stars], tmp / "overhead", model, args.samples, cores)
    print(f"per partition  : {overhead * 1e3:7.0f} ms ({args.overhead_stars} rows as 1 and as {n_many} partitions, "
          "one warm worker)")

    per_core = max(rates.values()) / cores  # the faster layout, per core it used
    gaia_partitions = GAIA_ROWS / args.gaia_rows_per_partition
    seconds = GAIA_ROWS / (per_core * CLUSTER_CORES) + gaia_partitions * overhead / CLUSTER_CORES
    print(f"Gaia DR3       : {GAIA_ROWS:.1e} rows / ({per_core:.1f} stars/s/core × {CLUSTER_CORES} cores) "
          f"+ {gaia_partitions:.0f} partitions × {overhead:.2f} s / {CLUSTER_CORES} = {seconds / 3600:.1f} h "
          f"({seconds / 86400:.2f} days) at {args.samples} samples/star")
    print(f"load average {os.getloadavg()[0]:.1f} at the end")
    shutil.rmtree(tmp)


if __name__ == "__main__":
    main()
