"""The model layer: parameter transform, set encoder, conditional flow, posterior model."""
from irisml_tf.model.base import GaussianMixtureBase, standard_normal
from irisml_tf.model.encoder import SetEncoder, TransformerBlock
from irisml_tf.model.flow import ConditionalMAF
from irisml_tf.model.made import ConditionalMADE, MaskedDense, made_degrees
from irisml_tf.model.posterior import PosteriorModel
from irisml_tf.model.transform import (
    DEFAULT_LOWER,
    DEFAULT_UPPER,
    NUM_PARAMS,
    PARAM_NAMES,
    ParameterTransform,
    fit_standardization,
)

__all__ = [
    "PARAM_NAMES", "NUM_PARAMS", "DEFAULT_LOWER", "DEFAULT_UPPER",
    "ParameterTransform", "fit_standardization",
    "TransformerBlock", "SetEncoder",
    "MaskedDense", "ConditionalMADE", "made_degrees",
    "standard_normal", "GaussianMixtureBase",
    "ConditionalMAF",
    "PosteriorModel",
]
