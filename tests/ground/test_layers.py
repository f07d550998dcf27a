"""The import layers (ground <- metrics <- models | datasets <- utils) hold: import-linter's contracts
in pyproject.toml pass, and library messages reach the console of an entry script."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def test_import_contracts_are_kept() -> None:
    lint = Path(sys.executable).with_name("lint-imports")
    if not lint.exists():
        pytest.skip("import-linter is not installed (pip install '.[test]')")
    done = subprocess.run([str(lint), "--no-logo", "--no-cache"], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_library_log_messages_reach_the_console() -> None:
    """Datasets log through ground.log (no handlers); run_cli gives them the console handler."""
    code = ("from utils.errors import run_cli\n"
            "from datasets.layout import log\n"
            "run_cli(lambda: (log.info('info line'), log.warning('warning line')))\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    lines = done.stderr.splitlines()
    assert [line.split(" ", 1)[1] for line in lines] == ["info line", "warning line"]
