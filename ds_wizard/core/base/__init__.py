"""What every subsystem stands on: the one-line errors and exit codes (:mod:`errors`), the
numeric limits and number parsing (:mod:`limits`), text sanitising for terminals
(:mod:`text`), safe atomic file reads and writes (:mod:`fsio`) and every default a user can
override (:mod:`defaults`). It imports nothing else from ds-wizard.
"""
