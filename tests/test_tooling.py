"""Project tooling: the version, the extras (`irisml-tf infer` needs none of them) and a quiet
TensorFlow start-up."""
import configparser
import os
import platform
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import click
import pandas as pd
import pytest
from click.testing import CliRunner

import irisml_tf
from irisml_tf.cli.main import _Group, main
from irisml_tf.extras import EXTRAS, MissingExtra, extra_for, require

ROOT = Path(__file__).resolve().parents[1]
#: what the infer path must not import: every module of every extra
BLOCKED = tuple(sorted({m for modules in EXTRAS.values() for m in modules}))
#: TensorFlow's C++ start-up log on a CPU machine
TF_NOISE = ("cuInit", "oneDNN", "absl::InitializeLog", "cudart_stub", "cpu_feature_guard")


def _cli(args, cwd, blocked=()):
    """`irisml-tf ARGS` in a fresh process with ``blocked`` modules unimportable, the user's
    environment as is (no TF_CPP_MIN_LOG_LEVEL)."""
    code = ("import sys\n"
            f"for m in {tuple(blocked)!r}: sys.modules[m] = None  # `import m` raises ModuleNotFoundError\n"
            "from irisml_tf.cli.main import main\n"
            "main(sys.argv[1:], prog_name='irisml-tf')\n")
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=cwd, env=env,
                          timeout=600)


def _requirement_names(value: str) -> set[str]:
    lines = (line.strip() for line in value.splitlines())
    return {re.split(r"[<>=!~;\[ ]", line, maxsplit=1)[0].lower() for line in lines if line and line[0] != "#"}


def test_version_from_package_metadata():
    assert irisml_tf.__version__ == metadata.version("irisml-tf")
    r = CliRunner().invoke(main, ["--version"])
    assert r.exit_code == 0 and irisml_tf.__version__ in r.output


def test_extras_match_setup_cfg():
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    extras = cfg["options.extras_require"]
    required = _requirement_names(cfg["options"]["install_requires"])
    for extra, modules in EXTRAS.items():  # here a module's name is its distribution's
        assert _requirement_names(extras[extra]) == set(modules), extra
    assert set(BLOCKED) <= _requirement_names(extras["test"])
    assert not required & set(BLOCKED)
    assert {"tf-keras", "tensorflow-probability"} <= required
    assert extra_for("emcee") == "mcmc" and extra_for("pyphot.config") == "build" and extra_for("numpy") is None


def test_require_names_the_extra(monkeypatch):
    require("build")
    monkeypatch.setitem(sys.modules, "emcee", None)
    with pytest.raises(MissingExtra, match=r"`emcee` is not installed: pip install 'irisml-tf\[mcmc\]'"):
        require("mcmc")
    with pytest.raises(ValueError, match="unknown extra"):
        require("nope")


def test_commands_say_which_extra_to_install(monkeypatch, tmp_path):
    @click.group(cls=_Group)
    def group():
        pass

    @group.command()
    def fit():
        import emcee  # noqa: F401

    @group.command()
    def fails():
        import no_such_module_anywhere  # noqa: F401

    monkeypatch.setitem(sys.modules, "emcee", None)
    r = CliRunner().invoke(group, ["fit"])
    assert r.exit_code == 1 and "`irisml-tf fit`: `emcee` is not installed: pip install 'irisml-tf[mcmc]'" in r.output
    r = CliRunner().invoke(group, ["fails"])  # not an extra's module: the error as it is
    assert isinstance(r.exception, ModuleNotFoundError)

    monkeypatch.setitem(sys.modules, "pyphot", None)
    r = CliRunner().invoke(main, ["bands", "--write-filters", str(tmp_path / "f")])
    assert r.exit_code == 1 and "pip install 'irisml-tf[build]'" in r.output
    assert not (tmp_path / "f").exists()


@pytest.mark.slow
def test_infer_needs_no_extra_and_tensorflow_is_quiet(tmp_path):
    """The README's first command with every extra's modules unimportable; no TensorFlow start-up
    log on stderr."""
    proc = _cli(["infer", str(ROOT / "examples" / "demo_catalogue.csv"), "--out", "x.csv"], tmp_path, BLOCKED)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert len(pd.read_csv(tmp_path / "x.csv")) == 40
    noise = [line for line in proc.stderr.splitlines() if any(n in line for n in TF_NOISE)]
    assert not noise, noise


@pytest.mark.slow
def test_verbose_shows_tensorflow_log(tmp_path):
    proc = _cli(["--verbose", "simulate", "--n", "3", "--out", "s.csv"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "s.csv").exists()
    if platform.machine().lower() in ("x86_64", "amd64") and os.environ.get("TF_ENABLE_ONEDNN_OPTS") != "0":
        assert "oneDNN" in proc.stderr  # TensorFlow's x86 builds announce oneDNN at import


def test_slow_tests_exist_and_slow_fixtures_are_marked():
    import ast
    from types import SimpleNamespace

    from conftest import SLOW_TESTS, pytest_collection_modifyitems

    for name in SLOW_TESTS:  # a renamed test would silently join the fast tier
        file, test = name.split("::")
        tree = ast.parse((ROOT / "tests" / file).read_text())
        assert test in {f.name for f in ast.walk(tree) if isinstance(f, ast.FunctionDef)}, name

    def item(file, name, fixtures):
        it = SimpleNamespace(path=ROOT / "tests" / file, originalname=name, fixturenames=fixtures, marks=[])
        it.add_marker = it.marks.append
        return it

    items = [item("test_x.py", "test_a", ["tmp_path", "tiny_model", "tiny_export", "tiny_training"]),
             item("test_x.py", "test_b", ["tmp_path", "sim", "grid"]),
             item("test_grid.py", "test_build_from_bosz_spectra", ["tmp_path"])]
    pytest_collection_modifyitems(None, items)
    assert [[m.name for m in it.marks] for it in items] == [["slow"], [], ["slow"]]
