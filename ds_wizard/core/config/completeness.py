"""Does a DeepSpeed config give the training loop what it needs? The rule ``launch`` applies.

``check`` answers whether DeepSpeed accepts a config; a config can pass it and still stop
the training loop at its first step. ``{"train_micro_batch_size_per_gpu": 4}`` is a valid
DeepSpeed config, but without an ``optimizer`` block ``deepspeed.initialize`` returns an
engine with no optimizer and step 1 fails on every rank. Before anything starts,
:func:`complete_for_training` either completes such a config from the preset (and says
so) or refuses it with one line.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ds_wizard.core.base.errors import DsWizardError

if TYPE_CHECKING:
    from ds_wizard.core.check.checker import CheckReport
    from ds_wizard.core.presets.schema import PresetSpec

# DeepSpeed's own optimizers (matched case-insensitively, as DeepSpeed does) …
DEEPSPEED_OPTIMIZERS = ("adagrad", "adam", "adamw", "lamb", "lion", "muadam", "muadamw",
                        "musgd", "muon", "onebitadam", "zerooneadam", "onebitlamb")
# … and torch.optim classes DeepSpeed falls back to by exact name. LBFGS (needs a
# closure) and SparseAdam (needs sparse gradients) cannot step this loop's dense model.
TORCH_OPTIMIZERS = ("Adadelta", "Adafactor", "Adagrad", "Adam", "AdamW", "Adamax", "ASGD",
                    "NAdam", "RAdam", "RMSprop", "Rprop", "SGD")
UNUSABLE_TORCH_OPTIMIZERS = ("LBFGS", "SparseAdam")


class IncompleteConfig(DsWizardError):
    """A config the training loop cannot run, refused before launch."""


@dataclass(frozen=True)
class Completion:
    """The config the ranks will load, and what was added to it."""

    config: dict[str, Any]
    notes: tuple[str, ...] = ()


def optimizer_problem(cfg: dict[str, Any]) -> str | None:
    """Why the ``optimizer`` block cannot drive the loop; None when it can or is absent."""
    if "optimizer" not in cfg:
        return None
    block = cfg["optimizer"]
    if not isinstance(block, dict):
        return "optimizer must be an object with type and params"
    kind = block.get("type")
    if not isinstance(kind, str) or not kind:
        return "optimizer has no type (e.g. \"AdamW\")"
    if kind in UNUSABLE_TORCH_OPTIMIZERS:
        return f"optimizer type {kind!r} cannot train this model (use AdamW)"
    if kind.lower() not in DEEPSPEED_OPTIMIZERS and kind not in TORCH_OPTIMIZERS:
        return (f"optimizer type {kind!r} is neither a DeepSpeed optimizer nor a torch.optim "
                "class; DeepSpeed would stop at start-up")
    params = block.get("params", {})
    if not isinstance(params, dict):
        return "optimizer.params must be an object"
    return None


def training_problem(cfg: dict[str, Any]) -> str | None:
    """Why the loop cannot train on ``cfg`` as it is (no completion applied); None if it can.

    For a config that reaches a rank without going through :func:`complete_for_training`.
    """
    if "optimizer" not in cfg:
        return "it has no optimizer block"
    return optimizer_problem(cfg)


def complete_for_training(cfg: dict[str, Any], spec: PresetSpec,
                          report: CheckReport) -> Completion:
    """``cfg`` (which passed ``check``, giving ``report``) made complete for the loop.

    - no ``optimizer`` block: the preset's optimizer is supplied (a note says so);
    - an ``optimizer`` block the loop cannot use: refused (:class:`IncompleteConfig`);
    - batch keys DeepSpeed derives: written out with the values ``check`` derived, so the
      run's config and ``run.json`` name the same triple.
    The input is not modified.
    """
    from ds_wizard.core.check.checker import BATCH_KEYS
    from ds_wizard.core.config.dsconfig import optimizer_block

    if (problem := optimizer_problem(cfg)) is not None:
        raise IncompleteConfig(f"the config cannot train: {problem}",
                               "fix the optimizer block, or remove it to use the preset's")
    out = copy.deepcopy(cfg)
    notes = []
    if "optimizer" not in out:
        out["optimizer"] = optimizer_block(spec)
        params = out["optimizer"]["params"]
        note = (f"the config has no optimizer block: using the preset's "
                f"{out['optimizer']['type']} (lr {params['lr']:g}, weight decay "
                f"{params['weight_decay']:g})")
        if "scheduler" not in out:
            note += "; without a scheduler block the learning rate stays constant"
        notes.append(note)
    derived = {"train_batch_size": report.train_batch_size,
               "train_micro_batch_size_per_gpu": report.train_micro_batch_size_per_gpu,
               "gradient_accumulation_steps": report.gradient_accumulation_steps}
    filled = [k for k in BATCH_KEYS if out.get(k) is None and derived[k] is not None]
    for key in filled:
        out[key] = derived[key]
    if filled:
        notes.append("batch values DeepSpeed derives written out: "
                     + ", ".join(f"{k} {out[k]}" for k in filled))
    return Completion(out, tuple(notes))
