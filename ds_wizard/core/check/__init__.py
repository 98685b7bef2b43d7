"""Checking a DeepSpeed config written by hand: reading and repairing it (:mod:`checker`),
DeepSpeed's whole verdict from its own pydantic models shipped as a schema
(:mod:`dsschema`, :mod:`verdict`, ``data/deepspeed_schema.json``), the HF Trainer ``"auto"``
mode (:mod:`hfmode`), explaining a DeepSpeed error from a log (:mod:`explain`) and in-place
edits that keep the file's comments (:mod:`textedit`).
"""
