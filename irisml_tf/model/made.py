"""Conditional MADE (Germain+2015) as a Keras 3 layer, the shift/log-scale network of one MAF block.

Degrees: input i has degree i+1 (1..D); hidden unit k of every hidden layer has degree k mod D
(0..D−1, degree-0 units see only the conditioning context); output j (one shift and one log-scale
per input) has degree j+1. Input→hidden and hidden→hidden connections need
``degree_out >= degree_in``, hidden→output connections ``degree_out > degree_in``: output j then
depends on inputs 0..j−1 only (the autoregressive property) and on the context, which is added,
unmasked, to every hidden layer.

The output layer starts near zero (``output_init_scale``) so a block starts at the identity; the
log-scale is bounded softly, ``c · tanh(s / c)`` with ``c = log_scale_bound``. With the default
``tanh`` hidden activation the shift is bounded too (by the output weights), so a chain of
blocks maps finite inputs to finite outputs whatever the weights.
"""
from __future__ import annotations

from collections.abc import Sequence

import keras
import numpy as np
import tensorflow as tf

__all__ = ["MaskedDense", "ConditionalMADE", "made_degrees"]


def made_degrees(event_dim: int, hidden_units: Sequence[int]) -> list[list[int]]:
    """Degrees of the input, each hidden layer and the (shift, log-scale) output of a MADE.

    Returns a list: input degrees [D], then one list per hidden layer, then output degrees [2D].
    """
    degrees = [list(range(1, event_dim + 1))]
    degrees += [[k % event_dim for k in range(int(h))] for h in hidden_units]
    degrees.append(list(range(1, event_dim + 1)) * 2)
    return degrees


@keras.saving.register_keras_serializable(package="irisml_tf")
class MaskedDense(keras.layers.Layer):
    """Linear layer whose kernel is masked by unit degrees: ``x @ (W ⊙ M) + b``.

    Args:
      in_degrees: degree of each input unit, length n_in.
      out_degrees: degree of each output unit, length n_out (= number of units).
      strict: connect input i to output k iff ``out_degrees[k] > in_degrees[i]`` (True) or
        ``>=`` (False).
      kernel_initializer: Keras initializer (name, config or instance).
    Inputs with shape [..., n_in] give outputs with shape [..., n_out].
    """

    def __init__(self, in_degrees: Sequence[int], out_degrees: Sequence[int],
                 strict: bool = False, kernel_initializer="glorot_uniform", **kwargs):
        super().__init__(**kwargs)
        self.in_degrees = [int(d) for d in in_degrees]
        self.out_degrees = [int(d) for d in out_degrees]
        self.strict = bool(strict)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        din = np.asarray(self.in_degrees)[:, None]
        dout = np.asarray(self.out_degrees)[None, :]
        self._mask = (dout > din) if self.strict else (dout >= din)

    @property
    def mask(self) -> np.ndarray:
        """Connectivity mask with shape [n_in, n_out] (True = connected)."""
        return self._mask.copy()

    def build(self, input_shape=None):
        n_in, n_out = len(self.in_degrees), len(self.out_degrees)
        self.kernel = self.add_weight(shape=(n_in, n_out), initializer=self.kernel_initializer,
                                      name="kernel")
        self.bias = self.add_weight(shape=(n_out,), initializer="zeros", name="bias")

    def call(self, inputs):
        kernel = self.kernel * tf.constant(self._mask, dtype=self.kernel.dtype)
        return tf.linalg.matmul(inputs, kernel) + self.bias

    def get_config(self):
        config = super().get_config()
        config.update(in_degrees=list(self.in_degrees), out_degrees=list(self.out_degrees),
                      strict=self.strict,
                      kernel_initializer=keras.initializers.serialize(self.kernel_initializer))
        return config


@keras.saving.register_keras_serializable(package="irisml_tf")
class ConditionalMADE(keras.layers.Layer):
    """Shift and log-scale of one MAF block, given the block input and a context vector.

    Args:
      event_dim: D, size of the autoregressive variable.
      context_dim: C, size of the conditioning context.
      hidden_units: widths of the hidden layers, e.g. ``[128, 128]``.
      activation: hidden activation (Keras name); ``tanh`` keeps the shift bounded.
      log_scale_bound: c in ``log_scale = c · tanh(s / c)``.
      output_init_scale: standard deviation of the initial output weights (near zero).

    ``made(x, conditional_input=c)`` with x [N, D] and c [N, C] returns ``(shift, log_scale)``,
    each [N, D]; it is the ``shift_and_log_scale_fn`` of ``tfb.MaskedAutoregressiveFlow``.
    """

    def __init__(self, event_dim: int, context_dim: int, hidden_units: Sequence[int] = (128, 128),
                 activation: str = "tanh", log_scale_bound: float = 3.0,
                 output_init_scale: float = 1e-3, **kwargs):
        super().__init__(**kwargs)
        if int(event_dim) < 1 or int(context_dim) < 1:
            raise ValueError(f"`event_dim` and `context_dim` must be >= 1, got {event_dim}, "
                             f"{context_dim}")
        if len(hidden_units) < 1 or min(int(h) for h in hidden_units) < 1:
            raise ValueError(f"`hidden_units` needs at least one layer of width >= 1, "
                             f"got {list(hidden_units)}")
        if not log_scale_bound > 0:
            raise ValueError(f"`log_scale_bound` must be > 0, got {log_scale_bound}")
        self.event_dim = int(event_dim)
        self.context_dim = int(context_dim)
        self.hidden_units = [int(h) for h in hidden_units]
        self.activation = activation
        self.log_scale_bound = float(log_scale_bound)
        self.output_init_scale = float(output_init_scale)
        self._act = keras.activations.get(activation)
        degrees = made_degrees(self.event_dim, self.hidden_units)
        self.hidden_layers = [
            MaskedDense(degrees[i], degrees[i + 1], strict=False, name=f"masked_{i}")
            for i in range(len(self.hidden_units))]
        self.context_layers = [
            keras.layers.Dense(h, use_bias=False, name=f"context_{i}")
            for i, h in enumerate(self.hidden_units)]
        self.output_layer = MaskedDense(
            degrees[-2], degrees[-1], strict=True, name="masked_out",
            kernel_initializer=keras.initializers.RandomNormal(stddev=self.output_init_scale))

    def build(self, input_shape=None):
        for layer in self.hidden_layers + [self.output_layer]:
            layer.build()
        for layer in self.context_layers:
            layer.build((None, self.context_dim))

    def call(self, x, conditional_input=None):
        if conditional_input is None:
            raise ValueError(
                f"{self.name}: `conditional_input` is None. In a tfb.Chain, pass it per bijector "
                "name: bijector_kwargs={'<maf name>': {'conditional_input': context}}.")
        h = x
        for masked, ctx in zip(self.hidden_layers, self.context_layers):
            h = self._act(masked(h) + ctx(conditional_input))
        out = self.output_layer(h)
        shift, raw = out[..., :self.event_dim], out[..., self.event_dim:]
        c = self.log_scale_bound
        return shift, c * tf.math.tanh(raw / c)

    def get_config(self):
        config = super().get_config()
        config.update(event_dim=self.event_dim, context_dim=self.context_dim,
                      hidden_units=list(self.hidden_units), activation=self.activation,
                      log_scale_bound=self.log_scale_bound,
                      output_init_scale=self.output_init_scale)
        return config
