"""The per-star A_V prior a dust map gives, and the rule for when it is used. No TensorFlow here.

Three optional numbers per star; NaN means "not given" (that star keeps the prior's own A_V factor):

* ``av_prior`` ± ``av_prior_err`` [mag]: a Gaussian on A_V (a 3-D map's A_V and its 1σ), truncated
  to the prior's A_V support ``[av_low, upper]``; it REPLACES the prior's A_V factor for that star;
* ``av_max`` [mag]: an upper bound on A_V (a 2-D map's total column along the line of sight); it
  truncates whichever A_V factor applies: ``upper = min(av_high, av_max)``.

A value is used only where it defines a proper prior:

* ``av_max``: finite and above ``av_low`` (a bound at or below the prior's lowest A_V leaves no
  support); a bound above ``av_high`` is used but changes nothing;
* ``av_prior``: finite, with a finite ``av_prior_err`` > 0, and within :data:`AV_PRIOR_REACH` errors
  of the support: ``av_low − 3σ ≤ av_prior ≤ upper + 3σ``. A map value further off than that says
  the map and the model's A_V range disagree, not where the star is; truncating it would pile the
  prior on the edge of the range.

:func:`usable_av_prior` is the rule in numpy (the catalogue reader uses it to say why a value was
ignored); :meth:`irisml_tf.physics.prior.Prior.log_prob` applies the same rule in the graph, so raw
values sent to the SavedModel by a TF Serving client are treated the same way.
"""
from __future__ import annotations

import numpy as np

__all__ = ["AV_PRIOR_COLUMNS", "AV_PRIOR_REACH", "usable_av_prior"]

#: How many av_prior_err an av_prior may lie outside the A_V support and still be used.
AV_PRIOR_REACH = 3.0
#: The per-star prior quantities, in the order Prior.log_prob takes them.
AV_PRIOR_COLUMNS = ("av_prior", "av_prior_err", "av_max")


def usable_av_prior(av_prior, av_prior_err, av_max, av_low: float, av_high: float):
    """Which per-star values are used (arrays of any matching shape, NaN = not given).

    Returns ``(use_gauss, use_max, upper)``: bool arrays saying whether the Gaussian and the bound
    are used, and each star's A_V upper limit (``av_high``, or ``min(av_high, av_max)``).
    """
    av_prior, av_prior_err, av_max = (np.asarray(x, np.float64) for x in (av_prior, av_prior_err, av_max))
    with np.errstate(invalid="ignore"):
        use_max = np.isfinite(av_max) & (av_max > av_low)
        upper = np.where(use_max, np.minimum(av_high, av_max), av_high)
        reach = AV_PRIOR_REACH * av_prior_err
        use_gauss = (np.isfinite(av_prior) & np.isfinite(av_prior_err) & (av_prior_err > 0)
                     & (av_prior >= av_low - reach) & (av_prior <= upper + reach))
    return use_gauss, use_max, upper
