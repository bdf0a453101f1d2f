"""Write examples/demo_catalogue.csv: 40 simulated stars in the surveys' own column names.

    python examples/make_demo_catalogue.py

Stars are drawn from the default prior (configs/prior.yaml), photometry from THE simulator and
the default observation model with the star's mean magnitude in 9–15 (bands missing as in real
cross-matched catalogues), seed 2026. Gaia comes as the archive gives it: magnitudes and
flux_over_error, no magnitude errors. The true parameters are kept as `*_true` columns
(`irisml-tf infer` passes unknown columns through), so the posteriors can be checked against them.
"""
from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import tensorflow as tf  # noqa: E402

from irisml_tf.data.observation import ObservationModel  # noqa: E402
from irisml_tf.data.stream import simulate  # noqa: E402
from irisml_tf.physics.bands import get_band  # noqa: E402
from irisml_tf.physics.prior import Prior  # noqa: E402
from irisml_tf.physics.simulator import PARAM_NAMES, Simulator  # noqa: E402

N, SEED = 40, 2026
OUT = Path(__file__).with_name("demo_catalogue.csv")


def main() -> None:
    sim = Simulator()
    prior = Prior(grid=sim.grid)
    obs = ObservationModel({"ref_mag": [9.0, 15.0]}, bands=sim.bands)
    x, theta = simulate(prior, sim, obs, N, tf.constant([SEED, 0]))
    x = {k: v.numpy() for k, v in x.items()}
    df = pd.DataFrame({"source_id": [f"demo-{i + 1:03d}" for i in range(N)]})
    for j, name in enumerate(sim.bands):
        band = get_band(name)
        present = x["band_index"][:, j] >= 0
        mag = np.where(present, x["mag"][:, j], np.nan).round(4)
        err = np.where(present, x["mag_err"][:, j], np.nan)
        df[band.mag_cols[0]] = mag
        if band.flux_over_error_cols:  # Gaia: σ_m = 2.5 / ln 10 / (flux / σ_flux)
            df[band.flux_over_error_cols[0]] = (2.5 / np.log(10) / err).round(2)
        else:
            df[band.err_cols[0]] = err.round(4)
    for i, name in enumerate(PARAM_NAMES):
        df[f"{name}_true"] = theta.numpy()[:, i].round(4)
    df.to_csv(OUT, index=False)
    print(f"wrote {OUT}: {N} stars, {int((x['band_index'] >= 0).sum())} magnitudes")


if __name__ == "__main__":
    main()
