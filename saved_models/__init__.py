"""Shipped exported models, installed as package data ``irisml_tf.saved_models`` (setup.cfg maps
this folder there), so :func:`irisml_tf.serving.default_model_path` finds ``default/`` in a checkout
and in an installed package alike."""
