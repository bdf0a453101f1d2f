"""Optional dependencies: which extra of the package installs a module, and a clear error when a
job needs one that is missing (``irisml-tf infer`` needs none of them)."""
from __future__ import annotations

import importlib.util

__all__ = ["EXTRAS", "MissingExtra", "extra_for", "missing_message", "require"]

#: Modules each extra provides (setup.cfg's extras_require lists the same packages with versions;
#: a test keeps the two in step). ``test`` installs all of them.
EXTRAS: dict[str, tuple[str, ...]] = {
    "mcmc": ("emcee", "corner"),  # the MCMC reference and its corner plots
    "plots": ("matplotlib", "corner"),  # evaluation figures, training's TensorBoard images
    "build": ("pyphot", "extinction"),  # grid build, filter curves and zero points
    "survey": ("lsdb", "hats", "dask", "distributed"),  # irisml-tf survey: HATS catalogues on Dask
}


class MissingExtra(ImportError):
    """A module of an optional extra is not installed; the message says what to install."""


def extra_for(module: str) -> str | None:
    """The first extra that installs top-level ``module``, or None."""
    top = module.split(".")[0]
    return next((extra for extra, modules in EXTRAS.items() if top in modules), None)


def missing_message(module: str, extra: str | None = None) -> str:
    """``emcee`` → "`emcee` is not installed: pip install 'irisml-tf[mcmc]'"."""
    extra = extra or extra_for(module)
    install = f"pip install 'irisml-tf[{extra}]'" if extra else f"pip install {module}"
    return f"`{module}` is not installed: {install}"


def require(extra: str) -> None:
    """Raise :class:`MissingExtra` naming the extra unless all of its modules can be imported."""
    if extra not in EXTRAS:
        raise ValueError(f"unknown extra `{extra}`; known: {', '.join(EXTRAS)}")
    for module in EXTRAS[extra]:
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):  # a module blocked with None in sys.modules, or broken
            found = False
        if not found:
            raise MissingExtra(missing_message(module, extra), name=module)
