"""The DeepSpeed JSON: the one door from a preset and a GPU count to a complete config
(:mod:`auto`), its assembly and text format (:mod:`dsconfig`), the source document's
summary (:mod:`summary`), what training needs beyond DeepSpeed's acceptance
(:mod:`completeness`) and what the ``presets`` views say (:mod:`views`).
"""
