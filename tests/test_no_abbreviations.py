"""Every parser refuses abbreviated flags (``--num_slot 5`` is a typo, not ``--num_slots 5``)."""
from __future__ import annotations

import argparse
import ast
import importlib
import sys
from pathlib import Path

import pytest

from ground.errors import UserError

REPO = Path(__file__).resolve().parents[1]
SOURCES = sorted([*REPO.glob("*.py"), *REPO.glob("scripts/*.py"), *REPO.glob("benchmarks/*.py"),
                  *REPO.glob("utils/**/*.py"), *REPO.glob("models/**/*.py"), *REPO.glob("datasets/**/*.py"),
                  *REPO.glob("metrics/**/*.py")])
# Entry scripts whose parser is built by build_parser() (the others build theirs inside main()).
WITH_BUILD_PARSER = sorted(p.stem for p in REPO.glob("*.py") if "def build_parser(" in p.read_text()) + [
    f"scripts.{p.stem}" for p in sorted(REPO.glob("scripts/*.py")) if "def build_parser(" in p.read_text()]


def parser_calls(path: Path) -> list[ast.Call]:
    """Every ``ArgumentParser(...)`` and subparser ``add_parser(...)`` call in a source file."""
    calls = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call):
            name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            if name == "ArgumentParser" or (name == "add_parser" and "add_subparsers" in path.read_text()):
                calls.append(node)
    return calls


def test_every_parser_in_the_code_turns_abbreviations_off() -> None:
    found, missing = 0, []
    for path in SOURCES:
        for call in parser_calls(path):
            found += 1
            flag = next((k.value for k in call.keywords if k.arg == "allow_abbrev"), None)
            if not (isinstance(flag, ast.Constant) and flag.value is False):
                missing.append(f"{path.relative_to(REPO)}:{call.lineno}")
    assert found >= 30  # the entry scripts, scripts/ and benchmarks/ were all scanned
    assert not missing, f"ArgumentParser without allow_abbrev=False: {missing}"


def _abbreviation(parser: argparse.ArgumentParser) -> str:
    """A unique prefix of one of the parser's long flags (what argparse would otherwise accept)."""
    options = [o for a in parser._actions for o in a.option_strings if o.startswith("--")]  # noqa: SLF001
    for option in sorted(options, key=len, reverse=True):
        prefix = option[:-1]
        if prefix != "--" and sum(o.startswith(prefix) for o in options) == 1:
            return prefix
    raise AssertionError("no long flag to abbreviate")


@pytest.mark.parametrize("module", WITH_BUILD_PARSER)
def test_entry_script_parsers_refuse_an_abbreviated_flag(module: str, monkeypatch) -> None:
    if module.startswith("scripts."):
        monkeypatch.syspath_prepend(str(REPO / "scripts"))
        module = module.split(".", 1)[1]
    parser = importlib.import_module(module).build_parser()
    abbreviated = _abbreviation(parser)
    with pytest.raises((SystemExit, UserError)):
        parser.parse_args([abbreviated, "1"])


def test_a_typo_in_a_training_flag_is_one_line(tmp_path: Path, capsys) -> None:
    import train_spot

    with pytest.raises(UserError, match="unrecognized arguments: --num_slot 5"):
        train_spot.main(["--dataset", "shapes", "--num_slot", "5", "--log_path", str(tmp_path)])
    assert not list(tmp_path.iterdir())
