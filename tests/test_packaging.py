"""The package installs as documented: pins in step, console command, python -m, --help everywhere."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import run_cli

ROOT = Path(__file__).resolve().parents[1]


def test_requirements_in_step_with_pyproject():
    import tomllib

    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    reqs = [ln.strip() for ln in (ROOT / "requirements.txt").read_text().splitlines()
            if ln.strip() and not ln.startswith("#")]
    assert sorted(deps) == sorted(reqs)
    assert "torch==2.14.1" in deps and "torchvision==0.29.1" in deps


def test_python_dash_m_and_console_script():
    r = subprocess.run([sys.executable, "-m", "pokemon_classifier", "--help"], capture_output=True, text=True)
    assert r.returncode == 0
    listed = re.findall(r"^    (\w+)\s", r.stdout, re.M)  # the subcommand table of the top-level help
    assert set(EXPECTED) <= set(listed), r.stdout


EXPECTED = ["download", "annotate", "dedup", "split", "clean", "train", "evaluate", "soup", "calibrate", "predict",
            "export", "serve"]


def test_every_subcommand_is_registered():
    from pokemon_classifier.cli import COMMANDS

    assert sorted(COMMANDS) == sorted(EXPECTED)


def test_top_level_help_imports_no_subcommand_module():
    """`pokemon-classifier --help` must stay instant: no torch, no subcommand module."""
    code = ("import sys; from pokemon_classifier.cli import main, COMMANDS\n"
            "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "mods = [m for m, _ in COMMANDS.values()] + ['torch']\n"
            "print('LOADED:' + ','.join(m for m in mods if m in sys.modules))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "COMMAND" in r.stdout and r.stdout.strip().splitlines()[-1] == "LOADED:", r.stdout


@pytest.mark.parametrize("cmd", EXPECTED)
def test_every_subcommand_has_help_with_examples(cmd):
    code, out, _ = run_cli(cmd, "--help")
    assert code == 0
    # an example is an indented command line that runs this very subcommand
    assert re.search(rf"^\s+(pokemon-classifier|torchrun .* -m pokemon_classifier) {cmd}\b", out, re.M), out
    assert "(default: None)" not in out and "(default: False)" not in out and "(default: True)" not in out, out


def test_module_convention():
    """Every subcommand module exposes add_arguments(p) and main(args), nothing else is looked up."""
    import importlib
    import inspect

    from pokemon_classifier.cli import COMMANDS

    for name, (module, _) in COMMANDS.items():
        mod = importlib.import_module(module)
        assert len(inspect.signature(mod.add_arguments).parameters) == 1, name
        assert len(inspect.signature(mod.main).parameters) == 1, name
        assert mod.__doc__ and f"pokemon-classifier {name}" in mod.__doc__, name
