"""The launch side's constants (the user-facing defaults live in ``core.defaults``)."""

from __future__ import annotations

from ds_wizard.core.base.defaults import CPU_DEFAULT_RANKS, GRACE_S, KILL_AFTER_S, LINGER_S

TRAIN_MODULE = "ds_wizard.train"

__all__ = ["CPU_DEFAULT_RANKS", "GRACE_S", "KILL_AFTER_S", "LINGER_S", "TRAIN_MODULE"]
