"""Presets, the TOML files teams share: their schema as frozen dataclasses (:mod:`schema`),
strict validation (:mod:`validation`) with its cache (:mod:`spec_cache`), schema migrations
(:mod:`migrations`), lookup and loading (:mod:`lookup`), writing and importing
(:mod:`store`), ``--set`` overrides (:mod:`overrides`), and the rules a preset's own fields
decide, precision and offload (:mod:`rules`). Everything downstream takes a validated
``PresetSpec``.
"""
