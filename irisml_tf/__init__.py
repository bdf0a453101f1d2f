"""irisml-tf: stellar parameters from broadband photometry by neural posterior estimation."""
from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("irisml-tf")
except PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"
