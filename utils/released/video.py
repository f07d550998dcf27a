"""Released video / self-supervised models: SMTC, SlotCon and SlotFA (see docs/released_models_pixel_video.md)."""
from __future__ import annotations

from utils.released import ReleasedFormat

FORMATS: list[ReleasedFormat] = []
