"""The ground layer: small pieces every package may use (errors, constants, safe file reading,
state-dict helpers, torch.distributed collectives, schedule math, the logger name).

Layers, lowest first (checked by import-linter, see ``[tool.importlinter]`` in pyproject.toml
and docs/extending.md): ``ground`` <- ``metrics`` <- ``models``, ``datasets`` <- ``utils`` <-
entry scripts, ``scripts/``, ``benchmarks/``. Modules here import nothing from the other
packages of this repository.
"""
