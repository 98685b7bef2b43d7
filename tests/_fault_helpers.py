"""Shared by the issue 15 fault tests: a checkpoint file that runs code when loaded."""

from __future__ import annotations

import os
import pickle
from pathlib import Path


class Planted:
    """What an attacker puts into a checkpoint: unpickling it runs ``__reduce__``."""

    def __init__(self, canary: Path) -> None:
        self.canary = canary

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (f"touch {self.canary}",))


def planted_pickle(canary: Path, size: int | None = None) -> bytes:
    """A pickle that creates ``canary`` when loaded, padded to ``size`` bytes: pickle stops
    reading at its STOP opcode, so the padding does not change what it runs."""
    data = pickle.dumps(Planted(canary), protocol=2)
    if size is not None:
        assert len(data) <= size
        data += b"\0" * (size - len(data))
    return data
