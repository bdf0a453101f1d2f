"""BOSZ readers: files are written here in the distributed layouts and read back (no real BOSZ files
can be downloaded in the test environment)."""
from __future__ import annotations

import bz2
import gzip
import math
import re
import warnings

import numpy as np
import pytest

from irisml_tf.physics.bosz import (
    SURFACE_FLUX_FACTOR,
    BoszFileError,
    bosz_name,
    find_bosz_files,
    parse_bosz_name,
    read_bosz_spectrum,
    scan_bosz_dir,
    write_bosz_spectrum,
)
from irisml_tf.physics.extinction import planck

NODES = [(3500.0, 5.0, -2.5), (5750.0, 4.5, -1.5), (9750.0, 4.0, 0.0), (16000.0, 3.0, 0.5)]


@pytest.fixture
def wave():
    # ln-uniform like the 2024 resampled grids (coarse: 400 points from 500 Å to 32 µm)
    return np.exp(np.linspace(np.log(500.0), np.log(320000.0), 400))


# -- names ------------------------------------------------------------------------------------
@pytest.mark.parametrize("name, expect", [
    ("bosz2024_mp_t5000_g+4.5_m+0.00_a+0.00_c+0.00_v2_r10000_resam.txt.gz",
     dict(teff=5000, logg=4.5, mh=0.0, alpha=0.0, carbon=0.0, vturb=2, resolution=10000, atmosphere="mp",
          product="resam", release="2024")),
    ("bosz2024_ms_t2800_g-0.5_m-1.50_a+0.25_c-0.75_v4_rorig_noresam.txt.gz",
     dict(teff=2800, logg=-0.5, mh=-1.5, alpha=0.25, carbon=-0.75, vturb=4, resolution=None, atmosphere="ms",
          product="noresam")),
    ("bosz2024_ap_t16000_g+4.0_m+0.75_a-0.25_c+0.50_v0_r500_resam.txt",
     dict(teff=16000, logg=4.0, mh=0.75, alpha=-0.25, carbon=0.5, vturb=0, resolution=500, atmosphere="ap")),
    ("amm13cp00op00t3500g45v20modrt0b50000rs.fits",
     dict(teff=3500, logg=4.5, mh=-1.25, alpha=0.0, carbon=0.0, vturb=2.0, resolution=50000, vrot=0.0,
          release="2017", product="fits")),
    ("amm15cm03op03t4250g25v20modrt0b2000rs.fits",
     dict(teff=4250, logg=2.5, mh=-1.5, alpha=0.25, carbon=-0.25, resolution=2000)),
    ("amp08cm08om03t35000g50v20modrt0b300000rs.asc.bz2",
     dict(teff=35000, logg=5.0, mh=0.75, alpha=-0.25, carbon=-0.75, product="asc")),
    ("amm23cp05op05t10000g00v20modrt0b500rs.fits", dict(mh=-2.25, carbon=0.5, alpha=0.5, logg=0.0)),
])
def test_parse_realistic_names(name, expect):
    got = parse_bosz_name(name)
    for key, value in expect.items():
        assert got[key] == value, key
    # a path gives the same as the bare name
    assert parse_bosz_name(f"/data/bosz/r10000/m+0.00/{name}") == got


@pytest.mark.parametrize("name", [
    "bosz2024_mp_t5000_g+4.5_m+0.00_a+0.00_c+0.00_v2_r10000_resam.fits",  # wrong extension
    "bosz2024_mp_t5000_g4.5_m+0.00_a+0.00_c+0.00_v2_r10000_resam.txt.gz",  # unsigned logg
    "bosz2024_wave_r10000.txt",  # a wavelength grid, not a spectrum
    "amp00cp00op00t5000g45v20modrt0b10000.fits",  # no `rs`
    "lte05000-4.50-0.0.PHOENIX-ACES-AGSS-COND-2011-HiRes.fits",
    "README.txt",
])
def test_unparsable_names_raise_naming_the_file(name):
    with pytest.raises(ValueError, match=re.escape(name)):
        parse_bosz_name(name)


@pytest.mark.parametrize("fmt", ["2024", "2017"])
def test_names_round_trip(fmt):
    for teff, logg, mh in NODES:
        for alpha, carbon in [(0.0, 0.0), (0.25, -0.75), (-0.25, 0.5)]:
            name = bosz_name(teff, logg, mh, alpha, carbon, fmt=fmt, resolution=2000)
            p = parse_bosz_name(name)
            assert (p["teff"], p["logg"], p["mh"], p["alpha"], p["carbon"], p["release"]) == \
                   (teff, logg, mh, alpha, carbon, fmt)
    assert bosz_name(3500, 4.5, -1.25, fmt="2017", resolution=50000) == "amm13cp00op00t3500g45v20modrt0b50000rs.fits"
    assert bosz_name(5000, 4.5, 0.0, resolution=10000) == \
        "bosz2024_mp_t5000_g+4.5_m+0.00_a+0.00_c+0.00_v2_r10000_resam.txt.gz"
    with pytest.raises(ValueError, match="multiple of 0.25"):
        bosz_name(5000, 4.5, -0.3, fmt="2017")
    with pytest.raises(ValueError, match="logg"):
        bosz_name(5000, 4.55, 0.0)


def test_writer_makes_folders_and_checks_file_names(tmp_path, wave):
    flam = planck(wave, [5000.0])[0]
    path = write_bosz_spectrum(tmp_path / "new" / "folder", 5000, 4.5, 0.0, wave, flam)
    assert path.parent == tmp_path / "new" / "folder"
    with pytest.raises(ValueError, match="spectrum.txt.gz"):
        write_bosz_spectrum(tmp_path / "spectrum.txt.gz", 5000, 4.5, 0.0, wave, flam)
    with pytest.raises(ValueError, match="does not carry the given teff"):
        write_bosz_spectrum(tmp_path / bosz_name(5250, 4.5, 0.0), 5000, 4.5, 0.0, wave, flam)
    with pytest.raises(ValueError, match="strictly increasing"):
        write_bosz_spectrum(tmp_path, 5000, 4.5, 0.0, wave[::-1], flam)


# -- round trips ------------------------------------------------------------------------------
@pytest.mark.parametrize("fmt, resolution, suffix", [
    ("2024", None, ".txt.gz"),  # native resolution, 3 columns
    ("2024", 2000, ".txt.gz"),  # resampled, 2 columns + wavelength grid file
    ("2017", 2000, ".fits"),
    ("2017", 2000, ".asc.bz2"),
])
def test_round_trip(tmp_path, wave, fmt, resolution, suffix):
    for teff, logg, mh in NODES:
        flam = planck(wave, [teff])[0]
        if suffix == ".asc.bz2":
            target = tmp_path / bosz_name(teff, logg, mh, fmt=fmt, resolution=resolution).replace(".fits", suffix)
        else:
            target = tmp_path
        path = write_bosz_spectrum(target, teff, logg, mh, wave, flam, fmt=fmt, resolution=resolution)
        assert path.name.endswith(suffix) and path.exists()
        s = read_bosz_spectrum(path)
        assert (s.teff, s.logg, s.mh, s.alpha) == (teff, logg, mh, 0.0)
        assert s.path == str(path)
        np.testing.assert_allclose(s.wavelength, wave, rtol=1e-14)
        np.testing.assert_allclose(s.flam, flam, rtol=1e-13, atol=0)
        assert not s.flam.flags.writeable and not s.wavelength.flags.writeable


def test_stored_flux_follows_each_release_convention(tmp_path, wave):
    flam = planck(wave, [5750.0])[0]
    # 2024 stores the Eddington flux H = F / 4π
    p24 = write_bosz_spectrum(tmp_path, 5750, 4.5, 0.0, wave, flam, fmt="2024")
    with gzip.open(p24, "rt") as f:
        table = np.loadtxt(f)
    assert table.shape == (wave.size, 3)
    np.testing.assert_allclose(table[:, 1] * 4 * math.pi, flam, rtol=1e-13)
    # the resampled product has no wavelength column: flux, continuum
    p24r = write_bosz_spectrum(tmp_path, 5750, 4.5, 0.0, wave, flam, fmt="2024", resolution=500,
                               continuum=1.1 * flam)
    with gzip.open(p24r, "rt") as f:
        table = np.loadtxt(f)
    assert table.shape == (wave.size, 2)
    np.testing.assert_allclose(table[:, 1] / table[:, 0], 1.1, rtol=1e-13)
    np.testing.assert_allclose(np.loadtxt(tmp_path / "bosz2024_wave_r500.txt"), wave, rtol=1e-15)
    # 2017 FITS stores SpecificIntensity = F / π in HDU 1, with a Continuum column
    from astropy.io import fits

    p17 = write_bosz_spectrum(tmp_path, 5750, 4.5, 0.0, wave, flam, fmt="2017")
    with fits.open(p17) as hdul:
        data = hdul[1].data
        assert list(data.columns.names) == ["Wavelength", "SpecificIntensity", "Continuum"]
        np.testing.assert_allclose(data["SpecificIntensity"] * math.pi, flam, rtol=1e-14)
    assert SURFACE_FLUX_FACTOR == {"2024": 4 * math.pi, "2017": math.pi}


def test_resampled_grid_found_in_archive_layout(tmp_path, wave):
    # archive: r2000/m-1.50/<spectrum>, wavelength_grids/bosz2024_wave_r2000.txt
    folder = tmp_path / "r2000" / "m-1.50"
    folder.mkdir(parents=True)
    grid = tmp_path / "wavelength_grids" / "bosz2024_wave_r2000.txt"
    flam = planck(wave, [4000.0])[0]
    path = write_bosz_spectrum(folder, 4000, 1.5, -1.5, wave, flam, resolution=2000, wave_path=grid)
    assert not (folder / "bosz2024_wave_r2000.txt").exists()
    s = read_bosz_spectrum(path)
    np.testing.assert_allclose(s.flam, flam, rtol=1e-13)
    # a second spectrum on a different grid at the same R is refused
    with pytest.raises(ValueError, match="differs"):
        write_bosz_spectrum(folder, 4250, 1.5, -1.5, wave * 1.001, flam, resolution=2000, wave_path=grid)
    # without the grid the error says what is missing
    grid.unlink()
    with pytest.raises(BoszFileError, match="bosz2024_wave_r2000.txt"):
        read_bosz_spectrum(path)


def test_negative_flux_is_clipped(tmp_path, wave):
    flam = planck(wave, [5000.0])[0]
    flam[10:20] = -1e-3
    s = read_bosz_spectrum(write_bosz_spectrum(tmp_path, 5000, 4.5, 0.0, wave, flam))
    assert np.all(s.flam[10:20] == 0) and np.all(s.flam >= 0)
    np.testing.assert_allclose(s.flam[20:], flam[20:], rtol=1e-13)


def test_fortran_exponents_and_comment_lines(tmp_path):
    path = tmp_path / "bosz2024_mp_t5000_g+4.5_m+0.00_a+0.00_c+0.00_v2_rorig_noresam.txt"
    path.write_text("# a header line\n  5.0000D+03  1.0000D+06  2.0D+06\n  5.0010D+03  1.5000D+06  2.0D+06\n")
    s = read_bosz_spectrum(path)
    np.testing.assert_allclose(s.wavelength, [5000.0, 5001.0])
    np.testing.assert_allclose(s.flam, 4 * math.pi * np.array([1e6, 1.5e6]))


# -- errors -----------------------------------------------------------------------------------
def test_bad_wavelengths_are_rejected_naming_the_file(tmp_path):
    name = "bosz2024_mp_t5000_g+4.5_m+0.00_a+0.00_c+0.00_v2_rorig_noresam.txt.gz"
    for rows, what in [("5000 1 1\n5000 2 2\n5001 3 3\n", "strictly increasing"),
                       ("5002 1 1\n5001 2 2\n5003 3 3\n", "strictly increasing"),
                       ("5000 1 1\nnan 2 2\n5003 3 3\n", "finite"),
                       ("5000 1 1\n5001 inf 2\n5003 3 3\n", "finite")]:
        path = tmp_path / name
        path.write_bytes(gzip.compress(rows.encode()))
        with pytest.raises(BoszFileError, match=what) as err:
            read_bosz_spectrum(path)
        assert name in str(err.value)


@pytest.mark.parametrize("name, content", [
    ("bosz2024_mp_t5000_g+4.5_m+0.00_a+0.00_c+0.00_v2_rorig_noresam.txt.gz", b"not gzip at all"),
    ("bosz2024_mp_t5000_g+4.5_m+0.00_a+0.00_c+0.00_v2_rorig_noresam.txt.gz",
     gzip.compress(b"5000 1 1\n5001 2 2\n")[:-12]),  # truncated download
    ("bosz2024_mp_t5000_g+4.5_m+0.00_a+0.00_c+0.00_v2_rorig_noresam.txt.gz",
     gzip.compress(b"<html>404 Not Found</html>\n")),
    ("bosz2024_mp_t5000_g+4.5_m+0.00_a+0.00_c+0.00_v2_rorig_noresam.txt.gz",
     gzip.compress(b"5000 1\n5001 2\n")),  # two columns where three are due
    ("amp00cp00op00t5000g45v20modrt0b2000rs.fits", b"SIMPLE  =  garbage"),
    ("amp00cp00op00t5000g45v20modrt0b2000rs.asc.bz2", bz2.compress(b"5000 1\n")[:-3]),
])
def test_corrupt_files_raise_naming_the_file(tmp_path, name, content):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(BoszFileError) as err:
        read_bosz_spectrum(path)
    assert name in str(err.value)


def test_fits_header_must_agree_with_the_name(tmp_path, wave):
    from astropy.io import fits

    path = write_bosz_spectrum(tmp_path, 6000, 4.0, -0.5, wave, planck(wave, [6000.0])[0], fmt="2017")
    with fits.open(path, mode="update") as hdul:
        hdul[0].header["TEFF"] = 6250.0
    with pytest.raises(BoszFileError, match="TEFF"):
        read_bosz_spectrum(path)
    # a renamed FITS file is still read when its header carries the parameters
    with fits.open(path, mode="update") as hdul:
        hdul[0].header["TEFF"] = 6000.0
    renamed = path.rename(tmp_path / "my_model.fits")
    s = read_bosz_spectrum(renamed)
    assert (s.teff, s.logg, s.mh) == (6000.0, 4.0, -0.5)


def test_unparsable_file_name_on_read(tmp_path):
    path = tmp_path / "spectrum.txt.gz"
    path.write_bytes(gzip.compress(b"5000 1 1\n5001 2 2\n"))
    with pytest.raises(ValueError, match="spectrum.txt.gz"):
        read_bosz_spectrum(path)
    with pytest.raises(FileNotFoundError):
        read_bosz_spectrum(tmp_path / "bosz2024_mp_t5000_g+4.5_m+0.00_a+0.00_c+0.00_v2_rorig_noresam.txt.gz")


# -- folders ----------------------------------------------------------------------------------
def _mixed_folder(root, wave):
    """A folder like a user's download: both releases, sub-folders, alpha/carbon variants, junk."""
    m0, m15 = root / "r2000" / "m+0.00", root / "r2000" / "m-1.50"
    m0.mkdir(parents=True)
    m15.mkdir(parents=True)
    (root / "fits").mkdir()
    grid = root / "wavelength_grids" / "bosz2024_wave_r2000.txt"
    for teff, logg, mh, folder in [(5000, 4.5, 0.0, m0), (5250, 4.5, 0.0, m0), (5000, 4.5, -1.5, m15)]:
        flam = planck(wave, [teff])[0]
        write_bosz_spectrum(folder, teff, logg, mh, wave, flam, resolution=2000, wave_path=grid)
        write_bosz_spectrum(folder, teff, logg, mh, wave, flam, alpha=0.25, resolution=2000, wave_path=grid)
        write_bosz_spectrum(folder, teff, logg, mh, wave, flam, carbon=-0.25, resolution=2000, wave_path=grid)
    write_bosz_spectrum(root / "fits", 9750, 4.0, 0.0, wave, planck(wave, [9750.0])[0], fmt="2017")
    write_bosz_spectrum(root / "fits", 9750, 4.0, 0.0, wave, planck(wave, [9750.0])[0], alpha=0.5, fmt="2017")
    (root / "README.txt").write_text("downloaded from MAST")
    (root / "r2000" / "hlsp_bosz_bosz2024_sim_r2000_bulkdl.sh").write_text("curl ...")
    (m0 / "notes.txt.gz").write_bytes(gzip.compress(b"1 2 3\n"))
    (m0 / "bosz2024_mp_t5000_g+4.5_m+0.00_a+0.00_c+0.00_v0_rorig_lineid.txt.gz").write_bytes(
        gzip.compress(b"5000.1 FeI 0.2\n"))
    return root


def test_scan_mixed_folder(tmp_path, wave):
    root = _mixed_folder(tmp_path, wave)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        files = find_bosz_files(root)
    assert [str(w.message) for w in caught if "repeat" in str(w.message)] == []
    assert any("mixes BOSZ 2017 and 2024" in str(w.message) for w in caught)
    nodes = sorted((p["teff"], p["logg"], p["mh"]) for _, p in files)
    assert nodes == [(5000, 4.5, -1.5), (5000, 4.5, 0.0), (5250, 4.5, 0.0), (9750, 4.0, 0.0)]
    assert all(p["alpha"] == 0 and p["carbon"] == 0 for _, p in files)
    assert all(p["wave_file"].endswith("wavelength_grids/bosz2024_wave_r2000.txt")
               for _, p in files if p["release"] == "2024")

    with pytest.warns(UserWarning, match="mixes"):
        spectra = scan_bosz_dir(root)
    assert not isinstance(spectra, list)  # a generator: read one at a time
    got = {(s.teff, s.logg, s.mh): s for s in spectra}
    assert set(got) == set(nodes)
    for (teff, _, _), s in got.items():
        np.testing.assert_allclose(s.flam, planck(wave, [teff])[0], rtol=1e-13)

    # alpha-enhanced selection
    enhanced = find_bosz_files(root, alpha=0.25)  # 2024 files only: no mixing warning
    assert len(enhanced) == 3 and all(p["alpha"] == 0.25 for _, p in enhanced)
    only_2017 = find_bosz_files(root, alpha=0.5)
    assert [(p["release"], p["teff"]) for _, p in only_2017] == [("2017", 9750)]


def test_scan_duplicates_keep_first_with_warning(tmp_path, wave):
    flam = planck(wave, [7750.0])[0]
    # the 7500–8000 K overlap: ATLAS9 and MARCS files for the same (teff, logg, mh), and two vturb
    write_bosz_spectrum(tmp_path, 7750, 2.0, 0.0, wave, flam, atmosphere="ms")
    write_bosz_spectrum(tmp_path, 7750, 2.0, 0.0, wave, 2 * flam, atmosphere="ap")
    write_bosz_spectrum(tmp_path, 7750, 2.0, 0.0, wave, 3 * flam, atmosphere="ms", vturb=4)
    with pytest.warns(UserWarning, match="2 BOSZ file.*repeat") as rec:
        files = find_bosz_files(tmp_path)
    assert len(files) == 1 and files[0][1]["atmosphere"] == "ap"  # first in path order
    assert "bosz2024_ms_t7750" in str(rec[0].message)
    # choosing vturb removes the duplicate it caused
    with pytest.warns(UserWarning, match="1 BOSZ file"):
        assert len(find_bosz_files(tmp_path, vturb=2)) == 1


def test_scan_errors(tmp_path, wave):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        scan_bosz_dir(tmp_path / "missing")
    (tmp_path / "README.txt").write_text("nothing here")
    with pytest.raises(BoszFileError, match=r"no BOSZ spectra .*0 BOSZ-named"):
        scan_bosz_dir(tmp_path)
    write_bosz_spectrum(tmp_path, 5000, 4.5, 0.0, wave, planck(wave, [5000.0])[0], alpha=0.25)
    with pytest.raises(BoszFileError, match=r"\[α/M\] = 0.0.*1 BOSZ-named"):
        scan_bosz_dir(tmp_path)
    # a resampled file whose wavelength grid was not downloaded fails up front
    sub = tmp_path / "r500"
    sub.mkdir()
    write_bosz_spectrum(sub, 5000, 4.5, 0.0, wave, planck(wave, [5000.0])[0], resolution=500)
    (sub / "bosz2024_wave_r500.txt").unlink()
    with pytest.raises(BoszFileError, match="bosz2024_wave_r500.txt"):
        find_bosz_files(tmp_path)


def test_scan_reads_corrupt_file_with_clear_error(tmp_path, wave):
    write_bosz_spectrum(tmp_path, 5000, 4.5, 0.0, wave, planck(wave, [5000.0])[0])
    bad = tmp_path / bosz_name(5250, 4.5, 0.0)
    bad.write_bytes(b"\x1f\x8b truncated")
    spectra = scan_bosz_dir(tmp_path)
    assert next(spectra).teff == 5000
    with pytest.raises(BoszFileError, match=re.escape(bad.name)):
        next(spectra)
