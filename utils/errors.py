"""The CLI side of :class:`ground.errors.UserError`: every entry script reports it as a single line."""
from __future__ import annotations

import sys
from types import ModuleType
from typing import Callable

from ground.errors import UserError


def run_cli(main: Callable[[], object]) -> None:
    """Run an entry script's ``main`` and turn a :class:`UserError` into a one-line exit (status 2),
    Ctrl-C into the line ``interrupted`` (status 130).

    A run folder that this process created but never trained in is removed again, and a
    torchrun process group is left cleanly. Under torchrun only rank 0 prints the error
    (every rank meets the same one).
    """
    from utils.logging import get_logger

    get_logger()  # the console handler for library messages (ground.log), before ``main`` logs anything
    run = _loaded("utils.run")
    if run is not None:
        run.CREATED_RUN_DIRS.clear()  # only folders made by this call are candidates for removal
    try:
        main()
    except UserError as err:
        _leave()
        if _is_main():
            print(f"error: {one_line(err)}", file=sys.stderr)
        _cleanup()
        sys.exit(2)
    except KeyboardInterrupt:
        # Ctrl-C (a second one during training, which stops politely on the first): one line, the
        # shell's exit status for SIGINT, and nothing half-written (files are replaced atomically).
        _leave()
        if _is_main():
            print("interrupted", file=sys.stderr)
        _cleanup()
        sys.exit(130)
    run = _loaded("utils.run")
    if run is not None:
        run.release_run_locks()
    _cleanup()


def one_line(err: UserError) -> str:
    """The error's own line, also when a DataLoader worker raised it (the loader re-raises a UserError
    whose text is the worker's whole traceback; its last line is the original message)."""
    text = str(err).strip()
    if "\n" in text and "Traceback" in text:
        last = text.splitlines()[-1]
        prefix = f"{UserError.__module__}.{UserError.__name__}: "
        return last[len(prefix):] if last.startswith(prefix) else last
    return text


def _leave() -> None:
    """Remove a run folder this call made but never trained in, and give up run-folder locks."""
    run = _loaded("utils.run")
    if run is not None:
        run.remove_unused_run_dirs()
        run.release_run_locks()


def _is_main() -> bool:
    """Under torchrun only rank 0 prints (every rank meets the same error)."""
    distributed = _loaded("utils.distributed")
    return distributed is None or distributed.is_main()


def _cleanup() -> None:
    distributed = _loaded("utils.distributed")
    if distributed is not None:
        distributed.cleanup()


def _loaded(name: str) -> ModuleType | None:
    """A module only if the script imported it (keeps torch out of light scripts like sweep.py)."""
    return sys.modules.get(name)
