"""A host-memory limit for `ds-wizard tune`'s slow test, on PYTHONPATH of every process.

In a training rank whose micro-batch is above ``DS_WIZARD_TEST_CAP_ABOVE_MICRO``, the
rank's address space is capped (RLIMIT_AS) at what it holds when training starts plus
``CAP_SLACK``: the first large allocation of the first step then fails in the real
allocator, as it does when a machine's memory limit is reached. Other processes and
ranks are untouched.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import os
import sys

CAP_SLACK = 32 * 2**20
TARGET = "ds_wizard.train.loop"


def _vm_size() -> int:
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmSize in /proc/self/status")


def _patch(module: object) -> None:
    import resource

    trainer = module.Trainer  # type: ignore[attr-defined]
    original = trainer._train_steps
    above = int(os.environ["DS_WIZARD_TEST_CAP_ABOVE_MICRO"])

    def capped(self, prog):  # type: ignore[no-untyped-def]
        if self.micro > above:
            cap = _vm_size() + CAP_SLACK
            resource.setrlimit(resource.RLIMIT_AS, (cap, resource.getrlimit(
                resource.RLIMIT_AS)[1]))
            print(f"[test] address space capped at {cap / 2**30:.2f} GiB", flush=True)
        return original(self, prog)

    trainer._train_steps = capped


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):  # type: ignore[no-untyped-def]
        if name != TARGET:
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        if spec is None or spec.loader is None:
            return spec
        loader = spec.loader
        run = loader.exec_module

        def exec_module(module):  # type: ignore[no-untyped-def]
            run(module)
            _patch(module)

        loader.exec_module = exec_module  # type: ignore[method-assign]
        return spec


if os.environ.get("DS_WIZARD_TEST_CAP_ABOVE_MICRO"):
    sys.meta_path.insert(0, _Finder())
