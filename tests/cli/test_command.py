"""The ``gem-sam`` console script: one command whose subcommands are exactly the ``python -m`` modules."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from gem_sam.cli import COMMANDS

MODULES = {"label": "gem_sam.label", "export": "gem_sam.export", "evaluate": "gem_sam.evaluate",
           "evaluate-dense": "gem_sam.evaluate_dense", "import-reviewed": "gem_sam.import_reviewed",
           "serve": "gem_sam.serve", "label-video": "gem_sam.label_video"}  # fmt: skip


def gem_sam_script() -> str:
    script = shutil.which("gem-sam", path=str(Path(sys.executable).parent))
    assert script, "the gem-sam console script is not installed beside this Python: run pip install -e ."
    return script


def run(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=300)


def options(help_text: str) -> set[str]:
    return set(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", help_text))


def test_every_subcommand_is_listed() -> None:
    assert set(COMMANDS) == set(MODULES)
    result = run(gem_sam_script(), "--help")
    assert result.returncode == 0
    for name in MODULES:
        assert re.search(rf"^  {name} +\S", result.stdout, flags=re.M), name


@pytest.mark.parametrize("command", sorted(MODULES))
def test_subcommand_is_the_module(command: str) -> None:
    """``gem-sam CMD --help`` and ``python -m gem_sam.<module> --help`` offer the same options."""
    ours = run(gem_sam_script(), command, "--help")
    module = run(sys.executable, "-m", MODULES[command], "--help")
    assert ours.returncode == module.returncode == 0, ours.stderr + module.stderr
    assert ours.stdout.startswith(f"usage: gem-sam {command} ")
    assert module.stdout.startswith(f"usage: python -m {MODULES[command]} ")
    assert options(ours.stdout) == options(module.stdout) and "--help" in options(ours.stdout)


def test_unknown_command_and_python_m_gem_sam() -> None:
    result = run(gem_sam_script(), "lable")
    assert result.returncode == 2 and "unknown command 'lable'" in result.stderr and "label" in result.stderr
    result = run(sys.executable, "-m", "gem_sam", "--version")
    assert result.returncode == 0 and result.stdout.startswith("gem_sam ")


def test_subcommand_errors_name_the_command(tmp_path: Path) -> None:
    result = run(gem_sam_script(), "export", str(tmp_path / "missing.json"), "--to", "semantic", "--out", "x")
    assert result.returncode == 2 and "missing.json" in result.stderr and "does not exist" in result.stderr
    result = run(gem_sam_script(), "label", "--images")
    assert result.returncode == 2 and result.stderr.startswith("usage: gem-sam label")
