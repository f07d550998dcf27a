"""Docs that cannot rot: every command in README.md and docs/ names a script that exists and whose
parser accepts every flag given (parse only, nothing runs); every relative link and every
``docs/...`` reference in the code resolves; every entry script's --help starts with what it does
and an example command.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import re
import shlex
import sys
from pathlib import Path

import pytest

from ground.errors import UserError

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]
ENTRY_SCRIPTS = sorted(p.name for p in REPO.glob("*.py"))
# Scripts of other projects that the docs show how to run (detectron2's training script).
EXTERNAL = {"train_net.py"}
# torchrun's own options that take a value (the script comes after them).
TORCHRUN_VALUED = {"--nproc_per_node", "--nnodes", "--node_rank", "--master_addr", "--master_port", "--rdzv_id",
                   "--rdzv_backend", "--rdzv_endpoint", "--max_restarts"}


def shell_blocks(path: Path) -> list[str]:
    """The fenced ```bash / ```sh / ```shell blocks of a Markdown file."""
    return re.findall(r"```(?:bash|sh|shell)\n(.*?)```", path.read_text(), flags=re.S)


def commands_in(block: str) -> list[list[str]]:
    """Shell commands of a block as word lists (continuations joined, comments and `...` dropped)."""
    text = block.replace("\\\n", " ")
    commands = []
    for line in text.splitlines():
        try:
            words = shlex.split(line, comments=True)
        except ValueError:
            continue
        current: list[str] = []
        for word in [*words, "&&"]:
            if word in ("&&", ";", "|", "||"):
                if current:
                    commands.append(current)
                current = []
            elif word != "...":
                current.append(word)
    return commands


def script_call(words: list[str]) -> tuple[str, list[str]] | None:
    """``(script path, its arguments)`` of a ``python X.py``, ``torchrun ... X.py`` or ``bash X.sh``
    command; None for other commands (cd, sbatch lines, pip ...)."""
    while words and re.fullmatch(r"[A-Z_][A-Z0-9_]*=\S*", words[0]):  # VAR=value prefixes
        words = words[1:]
    while words and words[0] in ("nice", "srun", "time", "exec"):
        words = words[3:] if words[0] == "nice" and len(words) > 2 and words[1] == "-n" else words[1:]
    if not words:
        return None
    head = words[0]
    if head.endswith("python") or head.endswith("python3"):
        if len(words) > 2 and words[1] == "-m":
            return None  # python -m pytest / torch.distributed.launch: not a project script
        return (words[1], words[2:]) if len(words) > 1 else None
    if head == "torchrun":
        rest = words[1:]
        while rest and rest[0].startswith("--"):
            rest = rest[2:] if rest[0] in TORCHRUN_VALUED and "=" not in rest[0] else rest[1:]
        return (rest[0], rest[1:]) if rest else None
    if head == "bash" and len(words) > 1:
        return words[1], words[2:]
    if head.endswith(".sh") or head.endswith(".py"):
        return head, words[1:]
    return None


def documented_calls() -> list[tuple[str, str, list[str]]]:
    calls = []
    for path in DOCS:
        for block in shell_blocks(path):
            for words in commands_in(block):
                call = script_call(words)
                if call is None:
                    continue
                script, args = call
                if script.endswith("scripts/sweep.py") and "--" in args:  # the swept command is a command too
                    inner = script_call(args[args.index("--") + 1:])
                    if inner is not None:
                        calls.append((path.relative_to(REPO).as_posix(), *inner))
                calls.append((path.relative_to(REPO).as_posix(), script, args))
    return calls


class _Parsed(Exception):
    """Raised in place of running a script once its arguments parsed."""


def _strict_parse(parser: argparse.ArgumentParser, args: list[str]) -> str | None:
    """None when ``parser`` accepts ``args``, else argparse's message."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            parser.parse_args(args)
        except SystemExit:
            return err.getvalue().strip().splitlines()[-1] if err.getvalue().strip() else "argparse error"
        except UserError as error:
            return str(error)
    return None


def check_arguments(script: str, args: list[str]) -> str | None:
    """None when ``script`` accepts ``args`` (parse only), else why not."""
    module_name = script[:-3].replace("/", ".")
    module = importlib.import_module(module_name)
    if module_name == "eval_spot":  # its flags depend on the checkpoint's method: one of them must fit
        from models import METHODS

        problems = [_strict_parse(module.build_parser(method), args) for method in [None, *METHODS]]
        return None if None in problems else problems[0]
    build = getattr(module, "build_parser", None)
    if build is not None:
        return _strict_parse(build(), args)
    # Scripts that make their parser inside main(): stop them right after parsing.
    original = argparse.ArgumentParser.parse_args

    def parse_then_stop(self: argparse.ArgumentParser, argv=None, namespace=None):  # noqa: ANN001
        original(self, argv, namespace)
        raise _Parsed

    err = io.StringIO()
    argparse.ArgumentParser.parse_args = parse_then_stop  # type: ignore[method-assign]
    saved_argv = sys.argv
    try:
        sys.argv = [script, *args]
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            try:
                module.main(args)
            except TypeError:  # main() without an argv parameter reads sys.argv
                module.main()
    except _Parsed:
        return None
    except SystemExit:
        return err.getvalue().strip().splitlines()[-1] if err.getvalue().strip() else "argparse error"
    except UserError as error:
        return str(error)
    finally:
        argparse.ArgumentParser.parse_args = original  # type: ignore[method-assign]
        sys.argv = saved_argv
    return "the script returned without parsing its arguments"


CALLS = documented_calls()


def test_the_docs_show_commands() -> None:
    scripts = {script for _, script, _ in CALLS}
    assert {"train_spot.py", "eval_spot.py", "scripts/quickstart.sh", "scripts/test.sh"} <= scripts, scripts


@pytest.mark.parametrize("source,script,args", CALLS, ids=[f"{s}:{c}" for s, c, _ in CALLS])
def test_documented_command_parses(source: str, script: str, args: list[str]) -> None:
    if Path(script).name in EXTERNAL:
        return
    assert (REPO / script).is_file(), f"{source}: {script} does not exist"
    if script.endswith(".py"):
        problem = check_arguments(script, args)
        assert problem is None, f"{source}: python {script} {shlex.join(args)}\n  -> {problem}"


def markdown_links(path: Path) -> list[str]:
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)  # links inside code are not links
    return re.findall(r"\]\(([^)\s]+)\)", text)


@pytest.mark.parametrize("path", DOCS, ids=[p.relative_to(REPO).as_posix() for p in DOCS])
def test_relative_links_resolve(path: Path) -> None:
    for link in markdown_links(path):
        if re.match(r"[a-z]+://|mailto:", link):
            continue
        target, _, anchor = link.partition("#")
        file = (path.parent / target).resolve() if target else path
        assert file.exists(), f"{path.relative_to(REPO)}: link {link} points to nothing"
        if anchor and file.suffix == ".md":
            assert anchor in _anchors(file), f"{path.relative_to(REPO)}: no heading #{anchor} in {target or path.name}"


def _anchors(path: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    anchors = set()
    for heading in re.findall(r"^#+\s+(.*)$", path.read_text(), flags=re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        anchors.add(slug)
    return anchors


# Citations of the maintainers' notes, which users do not have (built in pieces so that this file
# does not match itself).
NOTES_PATTERN = re.compile("|".join([r"\.\./" + "shared", r"\bspec" + "/", r"\b[Ss]pec \d", "spec" + " section",
                                     "spec" + r" (sa_|smtc_|spot_|adaslot|pitfall)"]))


def test_docs_references_in_code_resolve() -> None:
    """Code comments point to docs/... pages (and sections) that exist; nothing points outside."""
    sources = [p for p in REPO.rglob("*.py") if ".venv" not in p.parts] + list((REPO / "scripts").glob("*.sh"))
    problems = []
    for source in sources:
        text = source.read_text()
        for ref in re.findall(r"docs/[\w/\-.]+\.md(?:#[\w\-]+)?", text):
            target, _, anchor = ref.partition("#")
            if not (REPO / target).is_file():
                problems.append(f"{source.relative_to(REPO)}: {ref}")
            elif anchor and anchor not in _anchors(REPO / target):
                problems.append(f"{source.relative_to(REPO)}: {ref} (no such heading)")
        if NOTES_PATTERN.search(text) and source.name != "test_docs.py":
            problems.append(f"{source.relative_to(REPO)}: cites the maintainers' private notes; cite docs/ instead")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("script", ENTRY_SCRIPTS)
def test_help_says_what_the_script_does_with_an_example(script: str) -> None:
    module = importlib.import_module(script[:-3])
    parser = module.build_parser()
    description = (parser.description or "").strip()
    first = description.splitlines()[0] if description else ""
    assert len(first) > 20, f"{script}: --help should start with one line saying what it does"
    assert f"python {script}" in description or f"{script} " in description, \
        f"{script}: --help should show an example command"
