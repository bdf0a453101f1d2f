"""The `irisml-tf` command line (installed as the package ``irisml_tf.cli``)."""
