"""Set-attention encoder: a variable set of (band, magnitude, error) tokens → one context vector.

Token of a present band k: ``embed(band_k) + f(mag_k − mean of the star's present mags)
+ g(log max(err_k, err_floor))`` (f, g small MLPs). The distance-modulus-like offset common to all
bands is removed by the mean, so the encoder sees colours. A learned CLS token is prepended;
``num_blocks`` pre-LayerNorm transformer blocks follow (self-attention with a key padding mask,
then an MLP); the output is the CLS token after a final LayerNorm. There is no positional
encoding, so the output is invariant to the order of the tokens.

Padding (``band_index < 0``) never influences anything: padded entries are replaced by neutral
values before any arithmetic (so NaN or garbage there is harmless), their tokens are zeroed, and
no query may attend to them. Extra padding columns therefore leave the output unchanged.
"""
from __future__ import annotations

import keras
import tensorflow as tf

from irisml_tf.physics.bands import NUM_BANDS

__all__ = ["TransformerBlock", "SetEncoder"]


@keras.saving.register_keras_serializable(package="irisml_tf")
class TransformerBlock(keras.layers.Layer):
    """Pre-LayerNorm transformer block: ``x + MHA(LN(x))`` then ``x + MLP(LN(x))``.

    ``block(x, attention_mask)`` with x [B, T, E] and a boolean attention_mask [B, T, T]
    (True = query t may attend to key s) returns [B, T, E].
    """

    def __init__(self, embed_dim: int, num_heads: int, mlp_dim: int, dropout: float = 0.0,
                 **kwargs):
        super().__init__(**kwargs)
        if int(embed_dim) % int(num_heads) != 0:
            raise ValueError(f"`embed_dim` ({embed_dim}) must be divisible by `num_heads` "
                             f"({num_heads})")
        self.embed_dim = int(embed_dim)
        self.num_heads = int(num_heads)
        self.mlp_dim = int(mlp_dim)
        self.dropout = float(dropout)
        self.norm_attn = keras.layers.LayerNormalization(epsilon=1e-5, name="norm_attn")
        self.attention = keras.layers.MultiHeadAttention(
            num_heads=self.num_heads, key_dim=self.embed_dim // self.num_heads,
            dropout=self.dropout, name="attention")
        self.norm_mlp = keras.layers.LayerNormalization(epsilon=1e-5, name="norm_mlp")
        self.mlp_in = keras.layers.Dense(self.mlp_dim, activation="gelu", name="mlp_in")
        self.mlp_out = keras.layers.Dense(self.embed_dim, name="mlp_out")
        self.drop = keras.layers.Dropout(self.dropout, name="drop")

    def build(self, input_shape=None):
        shape = (None, None, self.embed_dim)
        self.norm_attn.build(shape)
        self.attention.build(shape, shape)
        self.norm_mlp.build(shape)
        self.mlp_in.build(shape)
        self.mlp_out.build((None, None, self.mlp_dim))

    def call(self, x, attention_mask, training=None):
        h = self.norm_attn(x)
        h = self.attention(h, h, attention_mask=attention_mask, training=training)
        x = x + self.drop(h, training=training)
        h = self.mlp_out(self.mlp_in(self.norm_mlp(x)))
        return x + self.drop(h, training=training)

    def get_config(self):
        config = super().get_config()
        config.update(embed_dim=self.embed_dim, num_heads=self.num_heads, mlp_dim=self.mlp_dim,
                      dropout=self.dropout)
        return config


@keras.saving.register_keras_serializable(package="irisml_tf")
class SetEncoder(keras.layers.Layer):
    """Context vector [B, embed_dim] of a padded set of observed bands.

    Args:
      num_bands: size of the band vocabulary (indices 0..num_bands−1).
      embed_dim, num_heads, num_blocks, mlp_dim: transformer sizes.
      dropout: dropout rate in attention and residual branches (training only).
      err_floor: magnitude errors are floored here before the log.

    ``encoder(band_index, mag, mag_err)`` with band_index int [B, K] (−1 = padding), mag and
    mag_err float [B, K]. A star with no present band gets the context of the CLS token alone.
    """

    def __init__(self, num_bands: int = NUM_BANDS, embed_dim: int = 64, num_heads: int = 4,
                 num_blocks: int = 2, mlp_dim: int = 128, dropout: float = 0.0,
                 err_floor: float = 1e-3, **kwargs):
        super().__init__(**kwargs)
        if not err_floor > 0:
            raise ValueError(f"`err_floor` must be > 0, got {err_floor}")
        self.num_bands = int(num_bands)
        self.embed_dim = int(embed_dim)
        self.num_heads = int(num_heads)
        self.num_blocks = int(num_blocks)
        self.mlp_dim = int(mlp_dim)
        self.dropout = float(dropout)
        self.err_floor = float(err_floor)
        e = self.embed_dim
        self.band_embedding = keras.layers.Embedding(self.num_bands, e, name="band_embedding")
        self.mag_mlp = [keras.layers.Dense(e, activation="gelu", name="mag_hidden"),
                        keras.layers.Dense(e, name="mag_out")]
        self.err_mlp = [keras.layers.Dense(e, activation="gelu", name="err_hidden"),
                        keras.layers.Dense(e, name="err_out")]
        self.blocks = [TransformerBlock(e, self.num_heads, self.mlp_dim, self.dropout,
                                        name=f"block_{i}") for i in range(self.num_blocks)]
        self.final_norm = keras.layers.LayerNormalization(epsilon=1e-5, name="final_norm")

    def build(self, input_shape=None):
        e = self.embed_dim
        self.cls_token = self.add_weight(
            shape=(1, 1, e), name="cls_token",
            initializer=keras.initializers.RandomNormal(stddev=0.02))
        self.band_embedding.build()
        for mlp in (self.mag_mlp, self.err_mlp):
            mlp[0].build((None, None, 1))
            mlp[1].build((None, None, e))
        for block in self.blocks:
            block.build()
        self.final_norm.build((None, e))

    def call(self, band_index, mag, mag_err, training=None):
        band_index = tf.convert_to_tensor(band_index)
        mag = tf.cast(mag, self.compute_dtype)
        mag_err = tf.cast(mag_err, self.compute_dtype)
        present = band_index >= 0  # [B, K]
        index = tf.where(present, band_index, tf.zeros_like(band_index))
        mag = tf.where(present, mag, tf.zeros_like(mag))
        mag_err = tf.where(present, mag_err, tf.ones_like(mag_err))
        count = tf.reduce_sum(tf.cast(present, mag.dtype), axis=1, keepdims=True)
        mean = tf.reduce_sum(mag, axis=1, keepdims=True) / tf.maximum(count, 1.0)
        rel = tf.where(present, mag - mean, tf.zeros_like(mag))[..., None]
        log_err = tf.math.log(tf.maximum(mag_err, self.err_floor))[..., None]

        tokens = (self.band_embedding(index)
                  + self.mag_mlp[1](self.mag_mlp[0](rel))
                  + self.err_mlp[1](self.err_mlp[0](log_err)))
        tokens = tf.where(present[..., None], tokens, tf.zeros_like(tokens))
        batch = tf.shape(tokens)[0]
        cls = tf.tile(tf.cast(self.cls_token, tokens.dtype), [batch, 1, 1])
        x = tf.concat([cls, tokens], axis=1)  # [B, 1 + K, E]
        keys = tf.concat([tf.ones([batch, 1], dtype=tf.bool), present], axis=1)  # [B, 1 + K]
        length = tf.shape(keys)[1]
        attention_mask = tf.broadcast_to(keys[:, None, :], [batch, length, length])
        for block in self.blocks:
            x = block(x, attention_mask, training=training)
        return self.final_norm(x[:, 0])

    def get_config(self):
        config = super().get_config()
        config.update(num_bands=self.num_bands, embed_dim=self.embed_dim,
                      num_heads=self.num_heads, num_blocks=self.num_blocks,
                      mlp_dim=self.mlp_dim, dropout=self.dropout, err_floor=self.err_floor)
        return config
