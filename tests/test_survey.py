"""`irisml-tf survey` and irisml_tf.app.survey on a 2-worker LocalCluster: a HATS catalogue written
here goes through the survey and comes back with every row, the statuses and numbers of `infer`,
the model loaded once per worker; cross-matched input; bad input; a failed run resumed.

Needs the survey extra (lsdb, hats, dask[distributed]); skipped without it, except the test of
the message that names the extra. One module-wide cluster; the shipped model, 32 samples."""
import importlib.util
import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from irisml_tf.app.infer import infer_catalog, output_columns
from irisml_tf.catalog import write_table
from irisml_tf.cli.main import main

needs_lsdb = pytest.mark.skipif(importlib.util.find_spec("lsdb") is None,
                                reason='lsdb is not installed: pip install -e ".[survey]"')

SURVEY_NAMES = {"Gaia_G": "phot_g_mean_mag", "Gaia_BP": "phot_bp_mean_mag", "Gaia_RP": "phot_rp_mean_mag",
                "2MASS_J": "j_m", "2MASS_J_err": "j_msigcom", "2MASS_H": "h_m", "2MASS_H_err": "h_msigcom",
                "2MASS_Ks": "k_m", "2MASS_Ks_err": "k_msigcom", "WISE_W1": "w1mpro", "WISE_W1_err": "w1sigmpro"}
GAIA = ["phot_g_mean_mag", "phot_bp_mean_mag", "phot_rp_mean_mag"]
TMASS = ["j_m", "j_msigcom", "h_m", "h_msigcom", "k_m", "k_msigcom"]
N = 48
SAMPLES, SEED = 32, 3
FEW = 5 * SAMPLES  # max_batch_elements of 5 stars per model call
ARGS = ["--samples", str(SAMPLES), "--seed", str(SEED), "--quiet"]


def test_missing_extra_names_it(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "lsdb", None)  # import lsdb → ImportError
    result = CliRunner().invoke(main, ["survey", str(tmp_path), "--out", str(tmp_path / "o")])
    assert result.exit_code != 0
    assert "pip install" in result.output and "irisml-tf[survey]" in result.output


def test_per_star_seeds_reach_the_model(local_model):
    """ExportedModel.run takes seeds [B, 2] (one per star); a star's draws depend on its seed only."""
    from irisml_tf.rowseed import call_seeds

    two = np.ones((2, 3), np.float32)
    args = (np.array([[0, 3, 5], [0, 1, 2]], np.int32), np.array([[12.0], [14.0]]) * two, 0.02 * two, 16)
    seeds = np.array([[5, 9], [7, 1]], np.int32)
    from irisml_tf.serving import compare_outputs

    full = local_model.run(*args, seed=seeds)
    alone = local_model.run(*(a[1:] for a in args[:3]), 16, seed=seeds[1:])
    # the same star alone: the same decisions and posterior, up to float rounding of the batched
    # matrix products, which the engine's rounds can amplify (check_export's rule)
    row = {k: v[1:] for k, v in full.items()}
    assert compare_outputs(row, alone).ok, compare_outputs(row, alone)
    both = full["samples"]
    other = local_model.run(*args, seed=seeds + 1)["samples"]
    assert not np.allclose(other[1], both[1])
    # an int or two ints: star i gets call_seeds(seed, B)[i]
    np.testing.assert_array_equal(local_model.run(*args, seed=[5, 9])["samples"],
                                  local_model.run(*args, seed=call_seeds([5, 9], 2))["samples"])
    with pytest.raises(ValueError, match=r"per-star `seed` must be \[B, 2\] with B = 2"):
        local_model.run(*args, seed=np.zeros((3, 2), np.int32))


def test_progress_lines_off_a_terminal(capsys):
    from tqdm import tqdm

    from irisml_tf.progress import tqdm_kwargs

    bar = tqdm(total=3, **tqdm_kwargs("survey", "partition"))  # stderr is captured: not a terminal
    for _ in range(3):
        bar.update(1)
    bar.close()
    lines = capsys.readouterr().err.splitlines()
    assert [line.split(" [")[0] for line in lines] == [f"survey: {i}/3 partitions" for i in range(4)]


# --- fixtures ------------------------------------------------------------------------------------

def photometry(n: int, seed: int) -> pd.DataFrame:
    """Plausible FGK-star magnitudes and errors (canonical band names), G = 10-17: colours grow
    with a redness c in 0-1.5. Only the survey's mechanics are tested here, not the posteriors."""
    rng = np.random.default_rng(seed)
    g, c = rng.uniform(10.0, 17.0, n), rng.uniform(0.0, 1.5, n)
    mags = {"Gaia_G": g, "Gaia_BP": g + 0.35 + 0.3 * c, "Gaia_RP": g - 0.5 - 0.35 * c}
    mags["2MASS_J"] = g - 1.1 - 0.8 * c
    mags["2MASS_H"] = mags["2MASS_J"] - 0.3 - 0.2 * c
    mags["2MASS_Ks"] = mags["2MASS_H"] - 0.08 - 0.05 * c
    mags["WISE_W1"] = mags["2MASS_Ks"] - 0.04
    df = pd.DataFrame(mags).astype(np.float32)
    for band in ("2MASS_J", "2MASS_H", "2MASS_Ks", "WISE_W1"):
        df[f"{band}_err"] = np.float32(0.03)
    return df


@pytest.fixture(scope="module")
def stars() -> pd.DataFrame:
    """N stars under the surveys' column names, spread over part of the sky, with bad rows."""
    sim = photometry(N, 11)
    rng = np.random.default_rng(5)
    df = pd.DataFrame({"source_id": rng.permutation(np.arange(N, dtype=np.int64) * 7919 + 4_000_000_000),
                       "ra": rng.uniform(0.0, 120.0, N), "dec": rng.uniform(-40.0, 40.0, N)})
    for col, alias in SURVEY_NAMES.items():
        df[alias] = sim[col]
    df.loc[1, "j_m"] = 99.0  # sentinel: dropped
    df.loc[2, "h_msigcom"] = -1.0  # bad error: default error
    df.loc[3, GAIA + ["j_m", "h_m", "k_m"]] = np.nan  # one band left: skipped
    df.loc[4, "w1mpro"] = 40.0  # out of range: dropped
    df["status"] = "archive flag"  # an input column named like an output column: kept as status_in
    return df


@pytest.fixture(scope="module")
def hats_dir(stars, tmp_path_factory) -> Path:
    import lsdb

    path = tmp_path_factory.mktemp("hats") / "stars"
    cat = lsdb.from_dataframe(stars, ra_column="ra", dec_column="dec", partition_rows=8, margin_threshold=None)
    assert cat.npartitions >= 4
    cat.write_catalog(path, as_collection=False, progress_bar=False)
    return path


@pytest.fixture(scope="module")
def client():
    from dask.distributed import Client, LocalCluster

    env = {"TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None, env=env) as cluster:
        with Client(cluster) as c:
            yield c


@pytest.fixture(scope="module")
def model_path() -> Path:
    from irisml_tf.serving import default_model_path

    return default_model_path().resolve()


@pytest.fixture(scope="module")
def local_model(model_path):
    from irisml_tf.serving import load_model

    return load_model(model_path)


@pytest.fixture(scope="module")
def infer_reference(stars, local_model, tmp_path_factory):
    """`infer` on the same rows: 5 stars per model call, and the default sub-batches."""
    d = tmp_path_factory.mktemp("infer")
    write_table(stars, d / "in.parquet")
    out = {}
    for name, batch in (("few", FEW), ("default", None)):
        extra = {"max_batch_elements": batch} if batch else {}
        infer_catalog(local_model, d / "in.parquet", d / f"{name}.parquet", num_samples=SAMPLES, seed=SEED,
                      chunk_size=20, progress=False, **extra)
        out[name] = pd.read_parquet(d / f"{name}.parquet").set_index("source_id").sort_index()
    return out


def _read(path) -> pd.DataFrame:
    import lsdb

    return lsdb.read_hats(path, columns="all").compute(progress_bar=False)


def _by_source(df) -> pd.DataFrame:
    return pd.DataFrame(df).reset_index().set_index("source_id").sort_index()


def _input_codes(statuses) -> list[str]:
    """The status codes about the input (not the model's flags)."""
    return [";".join(c for c in s.split(";") if not c.startswith("flag:")) for s in statuses]


def _same_numbers(got: pd.DataFrame, ref: pd.DataFrame) -> None:
    """The same numbers, bit for bit: a star's batch mates differ between survey partitions and
    infer sub-batches, and its result must not depend on them (irisml_tf.inference.rows)."""
    ref = ref.loc[got.index]
    for c in output_columns():  # LSDB hands back pyarrow columns (<NA> where infer has NaN)
        if pd.api.types.is_numeric_dtype(ref[c]):
            np.testing.assert_array_equal(got[c].to_numpy(np.float64, na_value=np.nan),
                                          ref[c].to_numpy(np.float64, na_value=np.nan), err_msg=c)
        else:
            assert got[c].tolist() == ref[c].tolist(), c


@pytest.fixture(scope="module")
def few_star_run(hats_dir, model_path, client, tmp_path_factory):
    """The library job, 5 stars per model call (batch mates unlike the partitions')."""
    from irisml_tf.app.survey import run_survey

    out = tmp_path_factory.mktemp("survey1") / "posteriors"
    summary = run_survey(hats_dir, out, model_path, num_samples=SAMPLES, seed=SEED, max_batch_elements=FEW,
                         scheduler=client.scheduler.address, progress=False)
    return summary, out


@pytest.fixture(scope="module")
def cli_run(hats_dir, model_path, client, tmp_path_factory):
    out = tmp_path_factory.mktemp("survey2") / "posteriors"
    result = CliRunner().invoke(main, ["survey", str(hats_dir), "--out", str(out), "--model", str(model_path),
                                       "--scheduler", client.scheduler.address, *ARGS])
    return result, out


# --- the job -------------------------------------------------------------------------------------

@needs_lsdb
def test_survey_equals_infer_in_small_batches(few_star_run, hats_dir, stars, infer_reference):
    import lsdb

    summary, out = few_star_run
    assert summary.rows == summary.rows_in == N and summary.skipped == 1 and summary.inferred == N - 1
    assert summary.partitions == lsdb.read_hats(hats_dir).npartitions and summary.workers == 2
    assert summary.counts["skipped:too_few_bands"] == 1 and summary.counts["dropped:sentinel"] == 1
    assert "skipped:too_few_bands" in summary.table() and not Path(f"{out}.survey").exists()
    # the same partitions and spatial index; every input column, then infer's columns
    cat_in, cat_out = lsdb.read_hats(hats_dir), lsdb.read_hats(out)
    assert cat_out.get_healpix_pixels() == cat_in.get_healpix_pixels()
    got, inp = _read(out), _read(hats_dir)
    np.testing.assert_array_equal(got.index.to_numpy(), inp.index.to_numpy())
    expected = [c if c != "status" else "status_in" for c in inp.columns] + output_columns()
    assert list(got.columns) == expected
    kept = _by_source(got).reset_index()[[c if c != "status" else "status_in" for c in stars.columns]]
    kept.columns = stars.columns
    pd.testing.assert_frame_equal(kept.convert_dtypes(), stars.sort_values("source_id").reset_index(drop=True)
                                  .convert_dtypes(), check_dtype=False)
    got = _by_source(_read(out))
    _same_numbers(got, infer_reference["few"])


@needs_lsdb
def test_survey_equals_infer(cli_run, infer_reference):
    result, out = cli_run
    assert result.exit_code == 0, result.output
    _same_numbers(_by_source(_read(out)), infer_reference["default"])


@needs_lsdb
def test_cli(cli_run, infer_reference, hats_dir, model_path, client):
    result, out = cli_run
    assert result.exit_code == 0, result.output
    assert "2MASS_J      j_m ± j_msigcom" in result.output  # the column report
    assert "skipped:too_few_bands" in result.output and f"wrote {N} rows in" in result.output
    got = _by_source(_read(out))
    ref = infer_reference["default"]
    assert got.index.tolist() == ref.index.tolist()  # every row
    assert _input_codes(got["status"]) == _input_codes(ref["status"])
    assert np.isfinite(got["teff_median"]).sum() == N - 1
    # a finished output is not overwritten
    again = CliRunner().invoke(main, ["survey", str(hats_dir), "--out", str(out), "--model", str(model_path),
                                      "--scheduler", client.scheduler.address, *ARGS])
    assert again.exit_code != 0 and "exists and holds no unfinished survey" in again.output


@needs_lsdb
def test_partitioning_does_not_change_results(stars, model_path, client):
    """Without source_id the key is the spatial index: two partitionings, the same numbers."""
    import lsdb

    from irisml_tf.app.survey import survey_catalog

    df = stars.drop(columns="source_id")
    results = []
    for rows in (6, 30):
        cat = lsdb.from_dataframe(df, ra_column="ra", dec_column="dec", partition_rows=rows, margin_threshold=None)
        post = survey_catalog(cat, model_path, num_samples=SAMPLES, seed=SEED)
        results.append((cat.npartitions, pd.DataFrame(post.compute(progress_bar=False)).sort_index()))
    (n1, a), (n2, b) = results
    assert n1 > n2 and len(a) == len(b) == N
    pd.testing.assert_frame_equal(a, b)


@needs_lsdb
def test_model_loaded_once_per_worker(few_star_run, cli_run, model_path, client):
    from irisml_tf.app.survey import model_loads

    loads = client.run(model_loads)
    assert len(loads) == 2
    per_worker = [w.get(str(model_path), 0) for w in loads.values()]
    assert max(per_worker) == 1 and sum(per_worker) >= 1  # many partitions, at most one load each


@needs_lsdb
def test_cross_matched_input(model_path, client):
    """Gaia × 2MASS built with lsdb.crossmatch from catalogues named as the archives publish them."""
    import lsdb

    from irisml_tf.app.survey import survey_catalog

    n = 24
    sim = photometry(n, 2)
    rng = np.random.default_rng(8)
    ra, dec = rng.uniform(10.0, 50.0, n), rng.uniform(-20.0, 20.0, n)
    gaia = pd.DataFrame({"source_id": np.arange(n, dtype=np.int64) + 10**15, "ra": ra, "dec": dec})
    for band, col in zip(("Gaia_G", "Gaia_BP", "Gaia_RP"), GAIA):
        gaia[col] = sim[band]
        gaia[col.replace("_mag", "_flux_over_error")] = 1000.0
    offset = rng.uniform(-0.5, 0.5, (2, n)) / 3600.0  # < 1″ apart
    tmass = pd.DataFrame({"ra": ra + offset[0] / np.cos(np.radians(dec)), "dec": dec + offset[1],
                          "designation": [f"J{i:08d}" for i in range(n)]})
    for band, col in zip(("2MASS_J", "2MASS_J_err", "2MASS_H", "2MASS_H_err", "2MASS_Ks", "2MASS_Ks_err"), TMASS):
        tmass[col] = sim[band]
    tmass = tmass.iloc[4:]  # four Gaia stars without a 2MASS counterpart
    left = lsdb.from_dataframe(gaia, catalog_name="gaia", partition_rows=10, margin_threshold=None)
    right = lsdb.from_dataframe(tmass, catalog_name="two_mass", partition_rows=10, margin_threshold=None)
    # as the README's recipe does it: Gaia's names kept, the other survey's positions suffixed
    xmatch = left.crossmatch(right[["ra", "dec", *TMASS]], radius_arcsec=1.0, n_neighbors=1, how="left",
                             suffixes=("", "_2mass"), suffix_method="overlapping_columns", log_changes=False)
    xmatch = xmatch.rename({"_dist_arcsec": "dist_2mass"})
    said = []
    post = survey_catalog(xmatch, model_path, num_samples=SAMPLES, seed=SEED, echo=said.append)
    assert "2MASS_Ks     k_m ± k_msigcom" in said[0] and "phot_g_mean_flux_over_error" in said[0]
    got = pd.DataFrame(post.compute(progress_bar=False)).set_index("source_id").sort_index()
    assert got.index.tolist() == sorted(gaia["source_id"])  # every Gaia star, matched or not
    unmatched = got.index.isin(gaia["source_id"][:4])
    assert (got["n_bands"][~unmatched] == 6).all() and (got["n_bands"][unmatched] == 3).all()
    assert set(_input_codes(got["status"])) <= {"", "ok"}  # blanks are "not observed", not errors
    assert got["dist_2mass"].max() < 1.0 and got["dist_2mass"][unmatched].isna().all()


# --- bad input -----------------------------------------------------------------------------------

def test_not_a_hats_catalogue(tmp_path, model_path):
    pytest.importorskip("lsdb", reason='lsdb is not installed: pip install -e ".[survey]"')
    (tmp_path / "table.csv").write_text("ra,dec\n1,2\n")
    for path in (tmp_path / "table.csv", tmp_path / "missing"):
        result = CliRunner().invoke(main, ["survey", str(path), "--out", str(tmp_path / "out"),
                                           "--model", str(model_path), "--workers", "1"])
        assert result.exit_code != 0 and "is not a HATS catalogue" in result.output, result.output
        assert not (tmp_path / "out").exists()  # nothing started


@needs_lsdb
def test_partition_columns_differ_then_resume(hats_dir, cli_run, model_path, client, tmp_path):
    """A partition whose file lacks a column stops the run, naming it and what to do; the run's
    state is kept; with the file repaired, --resume finishes it and loses no row."""
    import pyarrow.parquet as pq

    src = tmp_path / "stars"
    shutil.copytree(hats_dir, src)
    part = sorted((src / "dataset").rglob("Npix=*.parquet"))[1]
    good = pq.read_table(part)
    pq.write_table(good.rename_columns(["j_mag" if c == "j_m" else c for c in good.schema.names]), part)
    out = tmp_path / "posteriors"
    cmd = ["survey", str(src), "--out", str(out), "--model", str(model_path), "--scheduler",
           client.scheduler.address, *ARGS]
    failed = CliRunner().invoke(main, cmd)
    assert failed.exit_code != 0
    assert "columns differ" in failed.output and "missing: j_m" in failed.output and "--resume" in failed.output
    assert Path(f"{out}.survey").is_dir()
    refused = CliRunner().invoke(main, cmd)  # without --resume: refused, nothing deleted
    assert refused.exit_code != 0 and "--resume" in refused.output and Path(f"{out}.survey").is_dir()
    pq.write_table(good, part)
    resumed = CliRunner().invoke(main, [*cmd, "--resume"])
    assert resumed.exit_code == 0, resumed.output
    assert f"wrote {N} rows" in resumed.output and not Path(f"{out}.survey").exists()
    pd.testing.assert_frame_equal(_read(out), _read(cli_run[1]))  # identical to the uninterrupted run


@needs_lsdb
def test_failure_keeps_finished_partitions(hats_dir, cli_run, model_path, client, tmp_path):
    """A partition that fails (after the others had time to finish): the error says what to do,
    the finished partitions are kept, and the resumed run writes only the others."""
    from irisml_tf.app.survey import SurveyError, survey_catalog, write_survey

    post = survey_catalog(hats_dir, model_path, num_samples=SAMPLES, seed=SEED)
    bad_pixel = post.get_healpix_pixels()[0]

    def fail_one(df, pixel):
        import time

        if pixel == bad_pixel:
            time.sleep(3)
            raise OSError("disk full")
        return df

    out = tmp_path / "posteriors"
    failing = post.map_partitions(fail_one, include_pixel=True, meta=post.meta)
    with pytest.raises(SurveyError, match=f"(?s){bad_pixel}: disk full.*kept in.*--resume"):
        write_survey(failing, out, progress=False)
    with pytest.raises(FileExistsError, match="--resume"):
        write_survey(post, out, progress=False)
    summary = write_survey(post, out, resume=True, progress=False)
    assert 1 <= summary.partitions_resumed < summary.partitions and summary.rows == N
    pd.testing.assert_frame_equal(_read(out), _read(cli_run[1]))


@needs_lsdb
def test_worker_dies_mid_run(hats_dir, model_path, client, tmp_path):
    """A worker process that dies mid-partition: Dask reruns its task elsewhere; every row arrives."""
    from irisml_tf.app.survey import SurveyError, survey_catalog, write_survey

    post = survey_catalog(hats_dir, model_path, num_samples=SAMPLES, seed=SEED)
    started, marker, total = tmp_path / "started", tmp_path / "died", post.npartitions
    started.mkdir()

    def die_once(df, pixel):  # in the last partition to start (a restarted worker then gets no task)
        import os

        (started / str(pixel)).touch()
        if len(list(started.iterdir())) == total and not marker.exists():
            marker.write_text(str(pixel))
            os._exit(1)
        return df

    dying = post.map_partitions(die_once, include_pixel=True, meta=post.meta)
    try:
        summary = write_survey(dying, tmp_path / "out", progress=False)
    except SurveyError:  # the dead worker left a partition file half written: --resume finishes the job
        summary = write_survey(post, tmp_path / "out", resume=True, progress=False)
    assert marker.exists() and summary.rows == N
    assert len(_read(tmp_path / "out")) == N
