"""The pure core of ds-wizard: every decision, no UI, no torch, no DeepSpeed at import time.

It is grouped by subsystem along the data flow (preset → batch → check | plan → config →
runs), each subpackage importing only those below it (an import-linter ``layers`` contract
in ``pyproject.toml``): :mod:`base`, :mod:`presets`, :mod:`batch`, :mod:`check`,
:mod:`plan`, :mod:`config` and :mod:`runs`. See ``docs/architecture.md``.
"""
