"""``python -m ds_wizard.train.export``: a checkpoint tag as weights ``from_pretrained`` loads.

Run by ``ds-wizard checkpoint export`` (``ds_wizard.launch.checkpoints``) in a process of
its own, on the CPU. The tag is verified against its completion marker first (nothing is
``torch.load``-ed before), then consolidated by DeepSpeed's own
``get_fp32_state_dict_from_zero_checkpoint`` (what ``zero_to_fp32.py`` does: every rank's
ZeRO partition merged into full fp32 CPU tensors); a ZeRO-0 tag holds whole weights
already. The model of the run's backend is built on the CPU, loads them strictly, and is
saved as that backend saves it (transformers: ``config.json`` + ``model.safetensors``).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from ds_wizard.core.base.errors import DsWizardError
from ds_wizard.core.runs import rundir


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m ds_wizard.train.export")
    p.add_argument("--run-dir", required=True)
    p.add_argument("--tag", default=None, help="default: the newest intact tag")
    p.add_argument("--to", required=True, help="a new (or empty) directory")
    return p.parse_args(argv)


def choose_tag(paths: rundir.RunPaths, tag: str | None) -> rundir.CheckpointInfo:
    """The tag asked for, or the newest intact one; RunError unless it verifies."""
    found = rundir.scan_checkpoints(paths.checkpoints)
    if tag is None:
        choice = rundir.latest_intact(paths.checkpoints)
        if choice.chosen is None:
            raise rundir.RunError(f"{paths.root} has no intact checkpoint",
                                  "; ".join(choice.notes) or "train it first")
        return choice.chosen
    info = next((c for c in found if c.tag == tag), None)
    if info is None:
        names = ", ".join(c.tag for c in found) or "none"
        raise rundir.RunError(f"no checkpoint {tag!r} in {paths.checkpoints} (tags: {names})")
    if not info.complete:
        raise rundir.RunError(f"checkpoint {tag} is incomplete (no completion marker)")
    if problems := rundir.check_checkpoint(info):
        raise rundir.RunError(rundir.damaged_note(info, problems))
    return info


def consolidated_state(ckpts: Path, info: rundir.CheckpointInfo) -> dict[str, Any]:
    """Full fp32 weights on the CPU, through DeepSpeed's zero_to_fp32 consolidation."""
    import torch

    if list(info.path.glob("*optim_states.pt")):
        from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

        state = get_fp32_state_dict_from_zero_checkpoint(str(ckpts), tag=info.tag)
    else:
        # ZeRO-0 without a sharded optimizer: the module's whole weights are in one file
        raw = torch.load(info.path / "mp_rank_00_model_states.pt", map_location="cpu",
                         weights_only=False)
        state = raw["module"]
    return {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in state.items()}


def backend_of(state: dict[str, Any]) -> str:
    """Which model class wrote these weights: mamba_ssm's ``MambaLMHeadModel`` names its
    embedding ``backbone.embedding``, transformers' ``Mamba(2)ForCausalLM``
    ``backbone.embeddings`` (the run's own choice may have been ``auto``)."""
    return "mamba_ssm" if any(k.startswith("backbone.embedding.") for k in state) \
        else "transformers"


def export(run_dir: Path, tag: str | None, out: Path) -> str:
    from ds_wizard.core.base.fsio import atomic_write_text
    from ds_wizard.core.config.dsconfig import dumps
    from ds_wizard.core.presets.lookup import read_preset_file
    from ds_wizard.core.runs.runspec import read_run_info
    from ds_wizard.train import model as models

    paths = rundir.RunPaths(run_dir)
    info = read_run_info(paths.run_json)
    spec = read_preset_file(paths.preset, info.spec.preset).spec
    ckpt = choose_tag(paths, tag)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise DsWizardError(f"{out} exists and is not an empty directory",
                            "give --to a new directory")
    state = consolidated_state(paths.checkpoints, ckpt)
    backend = backend_of(state)
    try:
        model = models.build_model(spec.model, backend, None)
    except ImportError as exc:
        raise DsWizardError(f"checkpoint {ckpt.tag} holds {backend} weights, and {backend} "
                            f"does not import here ({exc})",
                            "export it where the run trained") from exc
    own = model.state_dict()
    # a tied LM head is one tensor under two names: DeepSpeed saves it once
    tied = {k for k in own if k not in state and k.endswith("lm_head.weight")}
    missing = [k for k in own if k not in state and k not in tied]
    unexpected = [k for k in state if k not in own]
    if missing or unexpected:
        raise rundir.RunError(f"checkpoint {ckpt.tag} does not fit the run's model: "
                              f"missing {missing[:3]}, unexpected {unexpected[:3]}")
    model.load_state_dict(state, strict=not tied)
    out.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}."))
    try:
        models.export_pretrained(model, backend, stage)
        atomic_write_text(stage / "ds_wizard.json", dumps({
            "backend": backend, "run": str(run_dir), "tag": ckpt.tag, "step": ckpt.step,
            "tokenizer": info.spec.tokenizer or "bytes (token id = byte value)"}))
        if out.exists():
            out.rmdir()  # empty, checked above
        os.replace(stage, out)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return f"exported {ckpt.tag} (step {ckpt.step}) of {run_dir.name} to {out} " \
           f"({backend} format, {sum(v.numel() for v in state.values()):,} values)"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        print(export(Path(args.run_dir), args.tag, Path(args.to)), flush=True)
    except DsWizardError as exc:
        print(f"error: {exc.one_line()}", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
