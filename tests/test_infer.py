"""`infer_catalog` and `irisml-tf infer` on the tiny exported model: formats, seeds, resume,
samples files, bad input."""
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from irisml_tf.app.infer import ChunkInference, InferOptions, infer_catalog, output_columns, training_warning
from irisml_tf.catalog import read_table, write_table
from irisml_tf.columns import count_status
from test_columns import BAD_COUNTS, BAD_EXPECTED

DATA = Path(__file__).parent / "data"
SURVEY_NAMES = {"Gaia_G": "phot_g_mean_mag", "Gaia_BP": "phot_bp_mean_mag", "Gaia_RP": "phot_rp_mean_mag",
                "2MASS_J": "j_m", "2MASS_J_err": "j_msigcom", "2MASS_H": "h_m", "2MASS_H_err": "h_msigcom",
                "2MASS_Ks": "k_m", "2MASS_Ks_err": "k_msigcom", "WISE_W1": "w1mpro", "WISE_W1_err": "w1sigmpro"}
OPTS = dict(num_samples=32, seed=7, chunk_size=5, progress=False)


@pytest.fixture(scope="module")
def stars() -> pd.DataFrame:
    """12 simulated stars with mean magnitude 9-13 with Gaia (magnitudes only: default errors), 2MASS
    and WISE W1 under the surveys' column names, plus an id and the true parameters."""
    from irisml_tf.data.table import simulate_table

    sim = simulate_table(12, seed=4, observation={"ref_mag": [9.0, 13.0]}, all_bands=True)
    df = pd.DataFrame({"source_id": np.arange(100, 112)})
    for name in ("teff", "logg", "mh", "av", "rv"):
        df[name] = sim[name]
    for col, alias in SURVEY_NAMES.items():
        df[alias] = sim[col]
    return df


def _cell(v):
    try:
        return float(v)
    except ValueError:
        return str(v)


def _results(path) -> pd.DataFrame:
    return read_table(path)[output_columns()]


@pytest.fixture(scope="module")
def reference(tiny_model, stars, tmp_path_factory):
    d = tmp_path_factory.mktemp("ref")
    write_table(stars, d / "in.csv")
    summary = infer_catalog(tiny_model, d / "in.csv", d / "out.parquet", save_samples=d / "s.npz", **OPTS)
    return summary, pd.read_parquet(d / "out.parquet"), dict(np.load(d / "s.npz"))


def test_reference_run(reference, stars):
    summary, out, samples = reference
    assert summary.complete and summary.rows == 12 and summary.inferred == 12 and summary.skipped == 0
    assert list(out.columns) == list(stars.columns) + output_columns()
    pd.testing.assert_frame_equal(out[list(stars.columns)], stars, check_dtype=False)
    # Gaia came without error columns: every row says so, and nothing else is wrong with the input
    assert all(s.startswith("default_err:Gaia_G=no_err_column;default_err:Gaia_BP=no_err_column;"
                            "default_err:Gaia_RP=no_err_column") for s in out["status"])
    assert (out["n_bands"] == 7).all() and np.isfinite(out["teff_median"]).all()
    assert ((out["teff_p16"] <= out["teff_median"]) & (out["teff_median"] <= out["teff_p84"])).all()
    assert sum(summary.counts.get(k, 0) for k in ("ok", "default_err:no_err_column")) == 12
    assert samples["samples"].shape == (12, 32, 5) and samples["weights"].shape == (12, 32)
    np.testing.assert_allclose(samples["weights"].sum(axis=1), 1.0, rtol=1e-5)
    assert samples["row"].tolist() == list(range(12))
    assert samples["param_names"].tolist() == ["teff", "logg", "mh", "av", "rv"]


@pytest.mark.parametrize("suffix", [".csv", ".parquet", ".fits", ".ecsv", ".vot"])
def test_formats_round_trip(tiny_model, stars, reference, tmp_path, suffix):
    src, dst = tmp_path / f"in{suffix}", tmp_path / f"out{suffix}"
    write_table(stars, src)
    summary = infer_catalog(tiny_model, src, dst, **OPTS)
    assert summary.rows == 12 and not (tmp_path / f"out{suffix}.parts").exists()
    out = read_table(dst)
    assert list(out.columns) == list(stars.columns) + output_columns()
    np.testing.assert_array_equal(out["source_id"], stars["source_id"])  # every row, in order
    np.testing.assert_allclose(out["j_m"], stars["j_m"], rtol=1e-6)
    # same rows, same chunks, same seed: the same numbers whatever the format
    ref = reference[1]
    for col in ("teff_median", "logg_p16", "av_std", "ess", "khat", "chi2"):
        np.testing.assert_allclose(out[col], ref[col], rtol=1e-6, err_msg=col)
    assert out["status"].tolist() == ref["status"].tolist()


def test_seed(tiny_model, stars, reference, tmp_path):
    write_table(stars, tmp_path / "in.parquet")
    infer_catalog(tiny_model, tmp_path / "in.parquet", tmp_path / "a.parquet", **OPTS)
    infer_catalog(tiny_model, tmp_path / "in.parquet", tmp_path / "b.parquet", **dict(OPTS, seed=8))
    a, b = _results(tmp_path / "a.parquet"), _results(tmp_path / "b.parquet")
    pd.testing.assert_frame_equal(a, reference[1][output_columns()])
    assert not np.allclose(a["teff_mean"], b["teff_mean"])


def test_a_row_does_not_depend_on_its_chunk(tiny_model, stars, reference, tmp_path):
    # chunks of 7 + 5 rows instead of 5 + 5 + 2: every row's numbers the same, bit for bit
    write_table(stars, tmp_path / "in.parquet")
    infer_catalog(tiny_model, tmp_path / "in.parquet", tmp_path / "out.parquet", **dict(OPTS, chunk_size=7))
    pd.testing.assert_frame_equal(_results(tmp_path / "out.parquet"), reference[1][output_columns()])


def test_resume_equals_uninterrupted(tiny_model, stars, reference, tmp_path):
    write_table(stars, tmp_path / "in.csv")
    out, parts = tmp_path / "out.parquet", tmp_path / "out.parquet.parts"
    kw = dict(OPTS, save_samples=tmp_path / "s.h5")
    first = infer_catalog(tiny_model, tmp_path / "in.csv", out, stop_after=1, **kw)
    assert not first.complete and first.chunks_run == 1 and first.rows == 5
    assert parts.is_dir() and not out.exists()
    with pytest.raises(FileExistsError, match="--resume"):
        infer_catalog(tiny_model, tmp_path / "in.csv", out, **kw)
    with pytest.raises(ValueError, match="seed: was 7, now 8"):
        infer_catalog(tiny_model, tmp_path / "in.csv", out, resume=True, **dict(kw, seed=8))
    rest = infer_catalog(tiny_model, tmp_path / "in.csv", out, resume=True, **kw)
    assert rest.complete and rest.chunks_resumed == 1 and rest.chunks_run == 2 and not parts.exists()
    assert rest.inferred_now == 7 and rest.rows_per_second > 0  # this session's rows only
    assert rest.rows == 12 and sum(v for k, v in rest.counts.items() if not k.startswith("flag:")) >= 12
    pd.testing.assert_frame_equal(pd.read_parquet(out), reference[1])
    import h5py

    with h5py.File(tmp_path / "s.h5") as f:
        np.testing.assert_array_equal(f["samples"][:], reference[2]["samples"])
        np.testing.assert_array_equal(f["weights"][:], reference[2]["weights"])
        assert f["row"][:].tolist() == list(range(12)) and f.attrs["seed"] == 7
        assert [n.decode() for n in f["param_names"][:]] == ["teff", "logg", "mh", "av", "rv"]


def test_bad_catalogue(tiny_model, tmp_path):
    out, npz = tmp_path / "bad_out.csv", tmp_path / "bad.npz"
    summary = infer_catalog(tiny_model, DATA / "bad_catalogue.csv", out, save_samples=npz, num_samples=32,
                            seed=1, chunk_size=10, progress=False)
    src = pd.read_csv(DATA / "bad_catalogue.csv")
    got = pd.read_csv(out, keep_default_na=False, na_values=[""])
    assert len(got) == len(src) == 27 and summary.rows == 27 and summary.skipped == 3
    assert got["case"].tolist() == src["case"].tolist()  # every row, in input order
    kept = got[["status_in" if c == "status" else c for c in src.columns]].set_axis(src.columns, axis=1)
    # original columns, values as they were (CSV chunks may type a column differently: "5.0" → 5)
    pd.testing.assert_frame_equal(kept.map(_cell), src.map(_cell))
    # statuses: the input codes exactly, then only the model's quality flags
    flags = [";".join(c for c in s.split(";") if c.startswith("flag:")) for s in got["status"]]
    inputs = [";".join(c for c in s.split(";") if not c.startswith("flag:")) or "ok" for s in got["status"]]
    assert inputs == BAD_EXPECTED
    assert dict(count_status(inputs)) == BAD_COUNTS
    # the run's own counts: the same per input code; `ok` only for rows without any flag either
    n_ok = int((got["status"] == "ok").sum())
    assert {k: v for k, v in summary.counts.items() if not k.startswith("flag:")} == \
        {k: v for k, v in BAD_COUNTS.items() if k != "ok"} | ({"ok": n_ok} if n_ok else {})
    assert sum(v for k, v in summary.counts.items() if k.startswith("flag:")) >= 1
    assert "flag:bad_chi2" in flags[src.index[src["case"] == "impossible_colours"][0]]
    skipped = got["status"].str.contains("skipped:")
    assert got.loc[skipped, "teff_median"].isna().all() and got.loc[~skipped, "teff_median"].notna().all()
    assert got.loc[skipped, "n_bands"].tolist() == [2, 0, 1]
    valid = set(tiny_model.bands) | {""}
    assert set(got["outlier_band"].fillna("")) <= valid
    s = np.load(npz)
    assert s["samples"].shape == (27, 32, 5)
    assert np.isnan(s["samples"][skipped.to_numpy()]).all() and (s["weights"][skipped.to_numpy()] == 0).all()
    table = summary.table()
    assert re.search(r"\ndropped:sentinel +5 +18\.52\n", table) and "(inferred 24, skipped 3)" in table


def test_empty_and_header_only(tiny_model, tmp_path):
    (tmp_path / "empty.csv").write_text("")
    (tmp_path / "header.csv").write_text("source_id,phot_g_mean_mag,j_m\n")
    s = infer_catalog(tiny_model, tmp_path / "empty.csv", tmp_path / "e.parquet", save_samples=tmp_path / "e.npz",
                      **OPTS)
    assert s.rows == 0 and s.counts == {} and s.rows_per_second is None
    assert list(pd.read_parquet(tmp_path / "e.parquet").columns) == output_columns()
    assert np.load(tmp_path / "e.npz")["samples"].shape == (0, 32, 5)
    infer_catalog(tiny_model, tmp_path / "header.csv", tmp_path / "h.csv", **OPTS)
    h = pd.read_csv(tmp_path / "h.csv")
    assert len(h) == 0 and list(h.columns) == ["source_id", "phot_g_mean_mag", "j_m"] + output_columns()


def test_clear_errors(tiny_model, stars, tmp_path):
    write_table(stars[["source_id", "teff"]], tmp_path / "nobands.csv")
    with pytest.raises(ValueError, match="no column names a band"):
        infer_catalog(tiny_model, tmp_path / "nobands.csv", tmp_path / "o.csv", **OPTS)
    write_table(stars, tmp_path / "in.csv")
    with pytest.raises(ValueError, match="num_samples"):
        infer_catalog(tiny_model, tmp_path / "in.csv", tmp_path / "o.csv", **dict(OPTS, num_samples=10**6))
    with pytest.raises(ValueError, match="save_samples"):
        infer_catalog(tiny_model, tmp_path / "in.csv", tmp_path / "o.csv", save_samples=tmp_path / "s.txt", **OPTS)
    with pytest.raises(ValueError, match="is the input catalogue"):
        infer_catalog(tiny_model, tmp_path / "in.csv", tmp_path / "in.csv", **OPTS)
    with pytest.raises(ValueError, match=r"`default_err` = 0.6 mag must lie within the model's error range"):
        infer_catalog(tiny_model, tmp_path / "in.csv", tmp_path / "o.csv", default_err=0.6, **OPTS)
    assert not list(tmp_path.glob("*.parts"))


def test_cli(tiny_export, stars, reference, tmp_path, monkeypatch):
    from click.testing import CliRunner

    from irisml_tf.cli.main import main

    write_table(stars, tmp_path / "in.fits")
    runner = CliRunner()
    res = runner.invoke(main, ["infer", str(tmp_path / "in.fits"), "--model", str(tiny_export), "--out",
                               str(tmp_path / "out.csv"), "--samples", "32", "--seed", "7", "--chunk-size", "5",
                               "--save-samples", str(tmp_path / "s.h5"), "--quiet"])
    assert res.exit_code == 0, res.output
    assert "Gaia_G       phot_g_mean_mag ± none (default error)" in res.output
    assert "not a band column: source_id, teff, logg, mh, av, rv" in res.output
    assert "default_err:no_err_column" in res.output and "wrote 12 rows to" in res.output
    got = pd.read_csv(tmp_path / "out.csv")
    np.testing.assert_allclose(got["teff_median"], reference[1]["teff_median"], rtol=1e-6)
    assert (tmp_path / "s.h5").exists()
    monkeypatch.setenv("IRISML_TF_MODEL", str(tmp_path / "no_model"))
    res = runner.invoke(main, ["infer", str(tmp_path / "in.fits"), "--out", str(tmp_path / "o2.csv")])
    assert res.exit_code == 2 and "no shipped model" in res.output


def test_options_name_the_option(tiny_model, tmp_path):
    for bad, name in ((dict(seed=-1), "`seed`"), (dict(seed=1.5), "`seed`"), (dict(chunk_size=0), "`chunk_size`"),
                      (dict(max_batch_elements=0), "`max_batch_elements`"), (dict(stop_after=-1), "`stop_after`"),
                      (dict(num_samples=0), "`num_samples`"), (dict(save_samples="s.csv"), "`save_samples`")):
        with pytest.raises(ValueError, match=name):
            InferOptions(**bad).validate()
    with pytest.raises(ValueError, match=r"`num_samples` must be in 1 … 4096 \(the model's max_samples\)"):
        InferOptions(num_samples=5000).validate(tiny_model)
    with pytest.raises(ValueError, match="`default_err` = 0.6 mag"):
        InferOptions(default_err=0.6).validate(tiny_model)
    ok = InferOptions(seed=np.int64(3), save_samples=str(tmp_path / "s.npz")).validate(tiny_model)
    assert ok.seed == 3 and type(ok.seed) is int and ok.save_samples == tmp_path / "s.npz"


def test_chunk_function_on_its_own(tiny_model, stars, reference):
    # what the catalogue run does to its chunk 1 (rows 5-9), from a DataFrame alone
    run = ChunkInference.for_columns(tiny_model, stars.columns, InferOptions(num_samples=32, seed=7))
    result = run(stars.iloc[5:10], start=5)
    assert result.inferred == 5 and result.samples is None and result.weights is None
    pd.testing.assert_frame_equal(result.table, reference[1].iloc[5:10].reset_index(drop=True), check_dtype=False)
    with_samples = ChunkInference.for_columns(tiny_model, stars.columns,
                                              InferOptions(num_samples=32, seed=7, save_samples="s.npz"))
    np.testing.assert_array_equal(with_samples(stars.iloc[5:10], start=5).samples, reference[2]["samples"][5:10])


def test_training_warning(tiny_model, stars, tmp_path):
    import copy
    from dataclasses import replace

    from irisml_tf.serving import TrainingRecord

    assert tiny_model.meta.training.complete and training_warning(tiny_model.meta) is None
    assert training_warning(replace(tiny_model.meta, training=TrainingRecord())) is None  # nothing recorded
    stopped = copy.copy(tiny_model)
    stopped.meta = replace(tiny_model.meta, training=TrainingRecord(status="interrupted", step=12, steps_total=40))
    write_table(stars.iloc[:3], tmp_path / "in.csv")
    said = []
    infer_catalog(stopped, tmp_path / "in.csv", tmp_path / "out.csv", echo=said.append, **OPTS)
    warnings = [m for m in said if m.startswith("warning:")]
    assert warnings == [("warning: this model's training did not complete (status `interrupted` at step 12 of 40): "
                         "its posteriors may be less accurate than a fully trained model's")]


def test_cli_progress_lines_in_a_log(tiny_export, stars, tmp_path):
    """Off a terminal (CliRunner's stderr is not one) progress is a few plain lines, with a total
    for a VOTable too, never a redrawn bar."""
    from click.testing import CliRunner

    from irisml_tf.cli.main import main

    write_table(stars, tmp_path / "in.vot")
    res = CliRunner().invoke(main, ["infer", str(tmp_path / "in.vot"), "--model", str(tiny_export), "--out",
                                    str(tmp_path / "out.csv"), "--samples", "32", "--chunk-size", "1"])
    assert res.exit_code == 0, res.output
    assert "\r" not in res.output and "warning" not in res.output
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith("infer:")]
    assert 2 <= len(lines) <= 10, lines  # 12 chunks, at most a line per tenth
    assert all(re.fullmatch(r"infer: \d+/12 stars \(\d+ %\), [\d.]+ s elapsed", ln) for ln in lines[:-1]), lines
    assert re.fullmatch(r"infer: 12/12 stars \(100 %\), in [\d.]+ s", lines[-1])
    assert re.search(r"wrote 12 rows to \S+out.csv in [\d.]+ s \(12 inferred, [\d.]+ rows/s\)", res.stdout)


def test_log_progress_lines():
    import io

    from irisml_tf.progress import LogProgress

    now = [0.0]
    f = io.StringIO()
    p = LogProgress(1000, "infer", "star", file=f, clock=lambda: now[0])
    for _ in range(100):  # 100 updates of 10: one line per tenth
        now[0] += 1.0
        p.update(10)
    p.close()  # the last line said it all
    lines = f.getvalue().splitlines()
    assert len(lines) == 10 and lines[0] == "infer: 100/1000 stars (10 %), 10.0 s elapsed"
    assert lines[-1] == "infer: 1000/1000 stars (100 %), in 100.0 s"
    f = io.StringIO()
    p = LogProgress(None, "infer", "star", file=f, every=60.0, clock=lambda: now[0])
    for _ in range(10):  # unknown total: one line a minute, then the end
        now[0] += 25.0
        p.update(7)
    p.close()
    assert f.getvalue().splitlines() == ["infer: 21 stars, 75.0 s elapsed", "infer: 42 stars, 150.0 s elapsed",
                                         "infer: 63 stars, 225.0 s elapsed", "infer: 70 stars, in 250.0 s"]


def test_cli_speed_text():
    from types import SimpleNamespace

    from irisml_tf.cli.infer_cmd import _speed

    assert _speed(SimpleNamespace(rows_per_second=None, inferred_now=0)) == "no rows inferred in this run, rows/s n/a"
    assert _speed(SimpleNamespace(rows_per_second=0.4866, inferred_now=3)) == "3 inferred, 0.49 rows/s"
    assert _speed(SimpleNamespace(rows_per_second=6.66, inferred_now=40)) == "40 inferred, 6.7 rows/s"
    assert _speed(SimpleNamespace(rows_per_second=1234.5, inferred_now=10**5)) == "100000 inferred, 1234 rows/s"


def test_parallax_and_prior_columns_go_through(tiny_model, stars, reference, tmp_path):
    """Parallax and A_V prior columns: used where usable, a status code where not, never a lost row;
    rows with a parallax get distance … luminosity, the others NaN; a user prior file is taken."""
    df = stars.copy()
    plx = np.full(len(df), np.nan, object)
    plx[:4] = [5.0, -0.3, "abc", 2.0]
    err = np.full(len(df), np.nan, object)
    err[:4] = [0.05, 0.2, 0.1, -1.0]
    df["parallax"], df["parallax_error"] = plx, err
    df["av_prior"] = [0.3, "x"] + [np.nan] * (len(df) - 2)
    df["av_prior_err"] = [0.05, 0.05] + [np.nan] * (len(df) - 2)
    df.to_csv(tmp_path / "in.csv", index=False)
    (tmp_path / "near.yaml").write_text("av: {mean: 0.1, max: 2.0}\n")
    messages = []
    summary = infer_catalog(tiny_model, tmp_path / "in.csv", tmp_path / "out.csv", echo=messages.append,
                            prior=tmp_path / "near.yaml", **OPTS)
    out = pd.read_csv(tmp_path / "out.csv")
    assert summary.rows == len(df) == len(out)
    assert any("parallax: parallax ± parallax_error" in m for m in messages)
    assert any("av_prior (av_prior)" in m for m in messages) and any("prior:" in m for m in messages)
    status = out["status"].tolist()
    assert "parallax:text" in status[2] and "parallax:nonpositive_error" in status[3]
    assert "prior:av_prior_ignored(text)" in status[1]
    assert np.all(np.isfinite(out.loc[:1, ["distance_median", "radius_median", "mass_median"]]))
    assert out.loc[2:, "distance_median"].isna().all()  # unusable or no parallax: colour-only
    assert np.all(out["av_p84"].dropna() <= 2.0 + 1e-4)  # the file's A_V cap
    assert {"n_draws", "rounds"} <= set(out.columns) and (out["n_draws"].dropna() >= 256).all()


def test_cli_engine_defaults_are_the_librarys():
    """`infer` and `survey` share their engine options (cli/options.py); their defaults are
    InferOptions' and SurveyOptions'."""
    from irisml_tf.app.infer import InferOptions
    from irisml_tf.app.survey import SurveyOptions
    from irisml_tf.cli.main import main

    for name, options in (("infer", InferOptions()), ("survey", SurveyOptions())):
        params = {p.name: p for p in main.commands[name].params}
        assert params["target_ess"].default == options.target_ess
        assert params["max_draws"].default == options.max_draws
        assert params["parallax_zero_point"].default == options.parallax_zero_point
        assert params["prior_file"].default is None and options.prior is None
        assert params["num_samples"].default == options.num_samples
