"""The one YAML reading rule for config files (training configs, ``--set`` values, prior files).

PyYAML follows YAML 1.1, whose float pattern needs a dot and a signed exponent, so ``1e-3`` or
``1E+2`` load as strings; :func:`load_yaml` reads them as floats, as YAML 1.2 does.
"""
from __future__ import annotations

import re

import yaml

__all__ = ["ConfigLoader", "load_yaml"]


class ConfigLoader(yaml.SafeLoader):
    """SafeLoader that also resolves exponent floats without a dot or exponent sign."""


ConfigLoader.add_implicit_resolver(  # copies SafeLoader's table: plain SafeLoader is unchanged
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."))


def load_yaml(text: str):
    """Parse YAML text with :class:`ConfigLoader` (raises yaml.YAMLError on bad syntax)."""
    return yaml.load(text, Loader=ConfigLoader)
