"""The package installs as documented: pins in step, console command, python -m, --help everywhere."""

import subprocess
import sys
from pathlib import Path

import pytest

from conftest import run_cli

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
    assert r.returncode == 0 and "annotate" in r.stdout and "train" in r.stdout


@pytest.mark.parametrize("cmd", ["annotate", "dedup", "split", "train", "evaluate", "calibrate", "predict",
                                 "export", "serve", "download", "clean", "soup"])
def test_every_subcommand_has_help_with_examples(cmd, capsys):
    from pokemon_classifier.cli import COMMANDS

    if cmd not in COMMANDS:
        pytest.skip(f"{cmd} not implemented yet")
    code, out, _ = run_cli(cmd, "--help")
    assert code == 0 and ("example" in out.lower() or "pokemon-classifier" in out)
