"""Building the Mamba model from a preset's ModelSpec, on one of two backends.

- ``mamba_ssm``: state-spaces' ``MambaLMHeadModel`` with its fused CUDA kernels.
- ``transformers``: ``MambaForCausalLM`` / ``Mamba2ForCausalLM``. On CPU (or CUDA without
  the kernels) they run a pure-PyTorch path. Mamba-1's default sequential scan has a
  backward pass quadratic in the sequence length, so when the ``mambapy`` package is
  importable we switch on its parallel scan (``use_mambapy``), several times faster.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ds_wizard.core.base.errors import DsWizardError
from ds_wizard.core.plan.backends import (
    BACKENDS,
    GPU_INSTALL_HINT,
    KERNEL_PACKAGES,
    missing_kernel_modules,
    resolve_backend,
)
from ds_wizard.core.plan.params import count_params, padded_vocab
from ds_wizard.core.presets.schema import ModelSpec
from ds_wizard.train import causal_conv1d_fallback


class BackendError(DsWizardError):
    """The requested model backend cannot run here."""


@dataclass(frozen=True)
class BackendSelection:
    name: str  # "transformers" | "mamba_ssm"
    reason: str
    conv_fallback: bool = False  # ds-wizard's PyTorch causal conv stands in for causal-conv1d


def _try_import(module: str, errors: dict[str, str]) -> bool:
    """Import ``module`` for real: a broken CUDA extension raises more than ImportError
    (OSError for an undefined symbol, RuntimeError for a missing GPU kernel image)."""
    try:
        importlib.import_module(module)
    except Exception as exc:  # every failure is a reason to fall back, with its text
        errors[module] = f"{type(exc).__name__}: {exc}"
        return False
    return True


def choose_backend(requested: str = "auto", cuda: bool | None = None,
                   arch: str = "mamba2",
                   capability: tuple[int, int] | None = None) -> BackendSelection:
    """The kernels this rank will run, by the planner's rule (``core.runspec``), checked by
    importing what will really run: mamba_ssm, its selective-scan extension, Triton for
    Mamba-2, and causal-conv1d (ds-wizard's PyTorch stand-in when it is absent).

    ``cuda``: whether the ranks run on CUDA (DeepSpeed's accelerator decides).
    """
    cuda = torch.cuda.is_available() if cuda is None else cuda
    if requested not in BACKENDS:
        raise BackendError(f"unknown backend {requested!r}", f"choose one of {BACKENDS}")
    if requested == "transformers":
        return BackendSelection("transformers", "requested with --backend transformers")
    if not cuda:
        if requested == "mamba_ssm":
            raise BackendError("--backend mamba_ssm needs CUDA, and none is available",
                               "use --backend transformers (or auto) on CPU")
        return BackendSelection("transformers", "no CUDA device: transformers' PyTorch Mamba path")
    if capability is None:
        capability = tuple(torch.cuda.get_device_capability())  # type: ignore[assignment]
    errors: dict[str, str] = {}
    # mamba-ssm binds causal-conv1d's functions when it is imported: the stand-in goes
    # in first, and only where the real package does not import
    conv_real = _try_import("causal_conv1d", errors)
    # a causal-conv1d that is installed but does not import (built against another torch)
    # would leave mamba-ssm with None for its functions: the stand-in replaces it too
    fallback = not conv_real and causal_conv1d_fallback.install(replace_broken=True)

    def found(module: str) -> bool:
        return conv_real if module == "causal_conv1d" else _try_import(module, errors)

    if requested == "mamba_ssm":
        missing = missing_kernel_modules(arch, found)
        if missing:
            _drop_fallback(fallback)
            raise BackendError(_missing_text(missing, errors), GPU_INSTALL_HINT)
        reason = "requested with --backend mamba_ssm"
    else:
        decision = resolve_backend("auto", cuda=True, arch=arch, here=True,
                                   compute_capability=capability, found=found)
        if decision.name == "transformers":
            _drop_fallback(fallback)
            missing = [m for m in errors if m != "causal_conv1d"]
            detail = f" ({_missing_text(missing, errors)})" if missing else ""
            return BackendSelection("transformers", decision.reason + detail)
        reason = decision.reason
    if fallback:
        if requested == "mamba_ssm":
            reason += "; ds-wizard's PyTorch causal conv stands in for causal-conv1d"
        reason += (f" (causal-conv1d: {errors.get('causal_conv1d', 'not installed')}; "
                   "pip install --no-build-isolation causal-conv1d for its CUDA kernel)")
    return BackendSelection("mamba_ssm", reason, conv_fallback=fallback)


def _missing_text(missing: list[str], errors: dict[str, str]) -> str:
    return "; ".join(f"{KERNEL_PACKAGES.get(m, m)} does not import ({errors.get(m, 'missing')})"
                     for m in missing)


def _drop_fallback(installed: bool) -> None:
    """Take the stand-in back out when mamba_ssm will not run: transformers asks for
    causal_conv1d itself and should see the truth."""
    if installed:
        for name in [n for n in sys.modules if n.split(".")[0] == "causal_conv1d"]:
            del sys.modules[name]


def _import_mamba_ssm() -> Any:
    try:
        from mamba_ssm.models.mixer_seq_simple import MambaLMHeadModel
    except Exception as exc:  # a broken CUDA extension raises more than ImportError
        raise BackendError(f"mamba_ssm does not import ({type(exc).__name__}: {exc})",
                           GPU_INSTALL_HINT) from exc
    return MambaLMHeadModel


def mambapy_available() -> bool:
    return importlib.util.find_spec("mambapy") is not None


def zero_stage_of(ds_config: dict[str, Any] | None) -> int:
    zero = (ds_config or {}).get("zero_optimization") or {}
    return int(zero.get("stage", 0))


def param_dtype_of(ds_config: dict[str, Any] | None) -> torch.dtype | None:
    """The dtype DeepSpeed will store the parameters in: 16-bit under ``bf16``/``fp16``,
    None (fp32) otherwise (fp32, and ``torch_autocast``, which keeps fp32 params)."""
    cfg = ds_config or {}
    if (cfg.get("bf16") or {}).get("enabled"):
        return torch.bfloat16
    if (cfg.get("fp16") or {}).get("enabled"):
        return torch.float16
    return None


def build_model(spec: ModelSpec, backend: str,
                ds_config: dict[str, Any] | None = None) -> torch.nn.Module:
    """The model, built so that no rank holds more than its share of the accelerator.

    * ZeRO-0/1/2: on the CPU. ``deepspeed.initialize`` casts it there and only then moves
      it to this rank's device, so the device never sees the fp32 construction copy.
    * ZeRO-3: partitioned as it is built. transformers' classes are constructed inside
      ``deepspeed.zero.Init`` and then initialised module by module, gathered (as
      transformers itself does under ZeRO-3); mamba_ssm initialises weights inside its
      constructors on submodules that ``zero.Init`` has already partitioned, so it is
      built on the CPU and handed to ``zero.Init(module=...)``, which moves, broadcasts
      from rank 0 and partitions one parameter at a time.
    """
    stage3 = zero_stage_of(ds_config) == 3
    if backend == "mamba_ssm":
        model = _build_mamba_ssm(spec, dtype=param_dtype_of(ds_config))
        if stage3:
            partition_built_model(model, ds_config or {})
        return model
    if stage3:
        return _build_transformers_zero3(spec, ds_config or {})
    return _build_transformers(spec)


def partition_built_model(model: torch.nn.Module, ds_config: dict[str, Any]) -> None:
    """ZeRO-3-partition a model built on the CPU, one parameter at a time (rank 0's
    values win). The parameters are first cast to the dtype DeepSpeed stores them in."""
    import deepspeed

    dtype = param_dtype_of(ds_config)
    if dtype is not None:
        for p in model.parameters():
            if p.is_floating_point() and p.dtype != dtype:
                p.data = p.data.to(dtype)
    deepspeed.zero.Init(module=model, config_dict_or_path=ds_config)


def transformers_config(spec: ModelSpec) -> Any:
    vocab = padded_vocab(spec.vocab_size, spec.pad_vocab_size_multiple)
    common = dict(
        vocab_size=vocab, hidden_size=spec.d_model, state_size=spec.d_state,
        num_hidden_layers=spec.n_layer, expand=spec.expand, conv_kernel=spec.d_conv,
        use_bias=spec.bias, use_conv_bias=spec.conv_bias,
        tie_word_embeddings=spec.tie_embeddings, use_cache=False,
        pad_token_id=0, bos_token_id=0, eos_token_id=0,
    )
    if spec.arch == "mamba2":
        from transformers import Mamba2Config

        return Mamba2Config(
            num_heads=spec.expand * spec.d_model // spec.headdim, head_dim=spec.headdim,
            n_groups=spec.ngroups, chunk_size=spec.chunk_size, **common,
        )
    from transformers import MambaConfig

    return MambaConfig(use_mambapy=mambapy_available(), **common)


def _build_transformers(spec: ModelSpec) -> torch.nn.Module:
    from transformers import Mamba2ForCausalLM, MambaForCausalLM

    cls = Mamba2ForCausalLM if spec.arch == "mamba2" else MambaForCausalLM
    return cls(transformers_config(spec))


def _build_transformers_zero3(spec: ModelSpec, ds_config: dict[str, Any]) -> torch.nn.Module:
    """transformers' own ZeRO-3 construction (what ``from_config`` does under an
    ``HfDeepSpeedConfig``, without the accelerate package that object requires): weight
    init is off while ``zero.Init`` partitions each module as it is made, then each
    module is gathered in turn and initialised on rank 0."""
    import deepspeed
    from transformers import Mamba2ForCausalLM, MambaForCausalLM

    try:
        from transformers.initialization import no_init_weights
        from transformers.integrations.deepspeed import initialize_weights_zero3
    except ImportError:  # transformers before 5: build on the CPU, then partition
        model = _build_transformers(spec)
        partition_built_model(model, ds_config)
        return model
    cls = Mamba2ForCausalLM if spec.arch == "mamba2" else MambaForCausalLM
    with no_init_weights(), deepspeed.zero.Init(config_dict_or_path=ds_config):
        model = cls(transformers_config(spec))
    initialize_weights_zero3(model)
    model.tie_weights()
    return model


def _build_mamba_ssm(spec: ModelSpec, dtype: torch.dtype | None = None) -> torch.nn.Module:
    from mamba_ssm.models.config_mamba import MambaConfig

    cls = _import_mamba_ssm()
    ssm_cfg: dict[str, Any] = {"layer": "Mamba2" if spec.arch == "mamba2" else "Mamba1",
                               "d_state": spec.d_state, "d_conv": spec.d_conv,
                               "expand": spec.expand, "bias": spec.bias,
                               "conv_bias": spec.conv_bias}
    if spec.arch == "mamba2":
        ssm_cfg.update(headdim=spec.headdim, ngroups=spec.ngroups, chunk_size=spec.chunk_size)
    cfg = MambaConfig(
        d_model=spec.d_model, n_layer=spec.n_layer, vocab_size=spec.vocab_size,
        ssm_cfg=ssm_cfg, rms_norm=True, residual_in_fp32=True, fused_add_norm=True,
        pad_vocab_size_multiple=spec.pad_vocab_size_multiple,
        tie_embeddings=spec.tie_embeddings,
    )
    # on the CPU (device=None): the rank's device is not touched until DeepSpeed moves the
    # cast model there. In the 16-bit dtype DeepSpeed would cast to anyway, which halves
    # the host memory of every rank's copy; mamba keeps A_log and D fp32 regardless.
    return cls(cfg, device=None, dtype=dtype)


def numel(model: torch.nn.Module) -> int:
    """Parameters, counting tied tensors once (as core.params does)."""
    seen: set[int] = set()
    total = 0
    for p in model.parameters():
        if id(p) not in seen:
            seen.add(id(p))
            # a ZeRO-3 parameter is an empty placeholder; ds_numel is its full size
            total += getattr(p, "ds_numel", p.numel())
    return total


def param_check(model: torch.nn.Module, spec: ModelSpec) -> str:
    built, expected = numel(model), count_params(spec)
    if built == expected:
        return f"{built:,} parameters (matches the preset's exact count)"
    return f"{built:,} parameters (the preset's formula says {expected:,})"


def logits_of(engine: Any, ids: torch.Tensor) -> torch.Tensor:
    """Both backends return an object with ``.logits`` for ``model(input_ids)``."""
    return engine(ids).logits


def export_pretrained(module: torch.nn.Module, backend: str, out_dir: Path,
                      state_dict: dict[str, torch.Tensor] | None = None) -> None:
    """Weights that ``from_pretrained`` of the same class loads.

    ``state_dict``: the consolidated weights when the module's own are ZeRO-3 partitions.
    transformers writes ``config.json`` + ``model.safetensors``; mamba_ssm writes its own
    ``config.json`` + ``pytorch_model.bin`` (``MambaLMHeadModel.save_pretrained``'s format).
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    # CPU tensors at every ZeRO stage: a file of CUDA tensors does not load on a machine
    # without a GPU (torch.load would need map_location)
    state = cpu_state_dict(module.state_dict() if state_dict is None else state_dict)
    if backend == "mamba_ssm":
        _save_mamba_ssm(module, state, out_dir)  # mamba_ssm: config.json + pytorch_model.bin
    else:
        module.save_pretrained(str(out_dir), state_dict=state, safe_serialization=True)


def cpu_state_dict(state: dict[str, Any]) -> dict[str, Any]:
    """``state`` with every tensor on the CPU, detached. Tensors that share storage (tied
    embeddings) stay one tensor, so the writer still sees them as tied."""
    copies: dict[tuple[Any, ...], Any] = {}
    out: dict[str, Any] = {}
    for key, value in state.items():
        if not isinstance(value, torch.Tensor):
            out[key] = value
            continue
        ident = (value.device, value.data_ptr(), value.shape, value.dtype)
        if ident not in copies:
            copies[ident] = value.detach().cpu()
        out[key] = copies[ident]
    return out


def _save_mamba_ssm(module: torch.nn.Module, state_dict: dict[str, torch.Tensor],
                    out_dir: Path) -> None:
    """What ``MambaLMHeadModel.save_pretrained`` writes, from a given state dict."""
    import json
    import os
    import tempfile

    from ds_wizard.core.base.fsio import atomic_write_text

    fd, tmp = tempfile.mkstemp(dir=out_dir, prefix=".pytorch_model.", suffix=".tmp")
    os.close(fd)
    try:
        torch.save(state_dict, tmp)
        os.replace(tmp, out_dir / "pytorch_model.bin")
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    atomic_write_text(out_dir / "config.json", json.dumps(vars(module.config), indent=4))


def gather_zero3_state_dict(engine: Any) -> dict[str, torch.Tensor] | None:
    """The 16-bit weights on rank 0's CPU (None on the other ranks), gathered module by
    module by DeepSpeed itself, so no rank ever holds more than one module in full.

    Every rank must call it. ``_zero3_consolidated_16bit_state_dict`` is what
    ``engine.save_16bit_model`` uses (DeepSpeed 0.17.2 to 0.19.8 at least); calling it
    directly spares the ``stage3_gather_16bit_weights_on_model_save`` config switch.
    """
    return engine._zero3_consolidated_16bit_state_dict()
