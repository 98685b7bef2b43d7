"""The kernels a rank will run, found by importing them exactly as a rank does.

``python -m ds_wizard.train.kernels --backend auto --arch mamba2 --cuda --capability 9.0``
prints one JSON object (:class:`ds_wizard.core.runs.doctor.KernelProbe`). The launch side
runs it in a fresh interpreter before any rank starts (``ds_wizard.launch.doctor``), so the
backend is decided once, by the same imports (:func:`ds_wizard.train.model.choose_backend`)
and the same check of mamba-ssm's causal-conv1d bindings that :func:`verify` does in the
rank. A rank never falls back to another backend than the one planned: it stops with the
reason instead (:func:`planned_backend`).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import json
import sys
from typing import Any

from ds_wizard.core.base.errors import DsWizardError
from ds_wizard.core.runs.doctor import PACKAGES, KernelProbe

# where mamba-ssm binds causal-conv1d's functions, per architecture (2.2.5 to 2.3.x: one
# ``try`` imports causal_conv1d and causal_conv1d.cpp_functions and sets all of them to
# None when either fails)
CONV_BINDINGS = {
    "mamba1": "mamba_ssm.ops.selective_scan_interface",
    "mamba2": "mamba_ssm.ops.triton.ssd_combined",
}


class PlannedBackendUnavailable(DsWizardError):
    """The rank cannot run the backend the launch side planned."""


def versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def none_conv_functions(arch: str) -> tuple[list[str], str | None]:
    """mamba-ssm's causal-conv1d bindings that are None (the module it binds them in is
    imported); (names, error importing that module)."""
    module = CONV_BINDINGS.get(arch, CONV_BINDINGS["mamba2"])
    try:
        mod = importlib.import_module(module)
    except Exception as exc:  # a broken extension raises more than ImportError
        return [], f"{type(exc).__name__}: {exc}"
    names = sorted(n for n, v in vars(mod).items()
                   if n.startswith("causal_conv1d") and v is None)
    return names, None


def probe(requested: str, arch: str, cuda: bool,
          capability: tuple[int, int] | None) -> KernelProbe:
    """Import what the rank will import, and say which backend it will run."""
    from ds_wizard.train.model import BackendError, choose_backend

    found = versions()
    try:
        sel = choose_backend(requested, cuda=cuda, arch=arch, capability=capability)
    except BackendError as exc:
        return KernelProbe(None, exc.one_line(), versions=found,
                           errors=_import_errors(arch))
    errors = _import_errors(arch) if cuda else {}
    none: list[str] = []
    if sel.name == "mamba_ssm":
        none, error = none_conv_functions(arch)
        if error:
            errors[CONV_BINDINGS.get(arch, "mamba_ssm")] = error
    return KernelProbe(sel.name, sel.reason, conv_fallback=sel.conv_fallback, errors=errors,
                       none_functions=tuple(none), versions=found)


def _import_errors(arch: str) -> dict[str, str]:
    """Why each kernel module does not import (``choose_backend`` keeps only a summary)."""
    from ds_wizard.core.plan.backends import KERNEL_MODULES

    errors: dict[str, str] = {}
    for module in KERNEL_MODULES.get(arch, KERNEL_MODULES["mamba1"]):
        if module in sys.modules and sys.modules[module] is not None:
            continue
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name == module:
                errors[module] = "not installed"
            else:
                errors[module] = f"{type(exc).__name__}: {exc}"
        except Exception as exc:  # undefined symbol (OSError/ImportError), no kernel image
            errors[module] = f"{type(exc).__name__}: {exc}"
    return errors


def verify(backend: str, arch: str) -> None:
    """In the rank, after ``choose_backend``: the mamba_ssm backend's conv functions must
    be bound, or step 1 fails with "'NoneType' object is not callable"."""
    if backend != "mamba_ssm":
        return
    none, error = none_conv_functions(arch)
    if error or none:
        raise PlannedBackendUnavailable(
            "mamba_ssm was planned but " + (f"does not import ({error})" if error else
                                            f"its causal-conv1d functions are None "
                                            f"({', '.join(none)})"),
            "pip install --no-build-isolation 'causal-conv1d>=1.5.2' 'mamba-ssm>=2.2.5', "
            "then `ds-wizard doctor`")


def planned_backend(planned: str | None, requested: str, cuda: bool = True) -> str:
    """What the rank asks ``choose_backend`` for: a backend named on its command line,
    else the launch side's resolved one from run.json (so a rank that cannot import it
    stops instead of falling back), else ``requested``."""
    if requested != "auto" or not cuda:
        return requested
    return planned or requested


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m ds_wizard.train.kernels",
                                description="Import the Mamba kernels as a rank does; "
                                "print the backend it would run as JSON.")
    p.add_argument("--backend", default="auto")
    p.add_argument("--arch", default="mamba2")
    p.add_argument("--cuda", action="store_true")
    p.add_argument("--capability", default=None, help="compute capability, e.g. 9.0")
    args = p.parse_args(argv)
    cap = None
    if args.capability:
        major, _, minor = args.capability.partition(".")
        cap = (int(major), int(minor or 0))
    result: dict[str, Any] = probe(args.backend, args.arch, args.cuda, cap).to_dict()
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
