"""The project's logger, for library code: messages go to the ``ocl`` logger, whose console
handler is configured by the entry scripts (:func:`utils.logging.get_logger`)."""
from __future__ import annotations

import logging


def get_logger(name: str = "ocl") -> logging.Logger:
    """The named logger, without adding handlers (``utils.logging.get_logger`` adds the console one)."""
    return logging.getLogger(name)
