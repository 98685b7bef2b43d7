"""Two adjustments to how DeepSpeed starts inside a rank (issue 14).

- CPU ranks do not compile DeepSpeed's shared-memory collectives op: gloo does the same
  all-reduce, and the build is minutes of silence on a fresh machine.
- The config's warm-up schedule is built here and handed to ``deepspeed.initialize`` as a
  client scheduler, started one iteration in. DeepSpeed's own construction sets every
  group's lr to 0 (warning "Attempting to get learning rate from scheduler before it has
  started") and its first ``step()`` gives a ratio of 0 again, so steps 1 and 2 trained at
  lr 0. Started here, step k trains at the schedule's value for iteration k: never 0.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ds_wizard.core.runs.jit_ops import SHM_COMM

# DeepSpeed's warm-up schedules (deepspeed/runtime/lr_schedules.py) that take
# last_batch_iteration and behave as described above
WARMUP_SCHEDULES = ("WarmupLR", "WarmupDecayLR", "WarmupCosineLR")


def avoid_cpu_jit_ops() -> bool:
    """On the CPU accelerator, mark the shm comm op unbuildable; True when it did.

    Call before ``deepspeed.init_distributed()``: ``TorchBackend.__init__`` builds the op
    whenever ``deepspeed.ops.__compatible_ops__`` lists it, and that dict is cached in
    the module so the change holds.
    """
    from deepspeed.accelerator import get_accelerator

    if get_accelerator().device_name() != "cpu":
        return False
    import deepspeed.ops

    deepspeed.ops.__compatible_ops__[SHM_COMM] = False
    return True


def client_scheduler(cfg: dict[str, Any]) -> tuple[dict[str, Any], Callable[[Any], Any] | None]:
    """The config without its warm-up scheduler, and a callable that builds that scheduler
    started at iteration 1 (``deepspeed.initialize(lr_scheduler=...)``). Other schedulers
    are left to DeepSpeed: (cfg, None)."""
    sched = cfg.get("scheduler")
    if not isinstance(sched, dict) or sched.get("type") not in WARMUP_SCHEDULES:
        return cfg, None
    name = sched["type"]
    params = {k: v for k, v in (sched.get("params") or {}).items()
              if k != "last_batch_iteration"}

    def build(optimizer: Any) -> Any:
        from deepspeed.runtime import lr_schedules

        # a start other than -1 skips the constructor's lr = 0; step(1) then sets the
        # lr the first optimizer step uses. A resumed run loads its own iteration after.
        scheduler = getattr(lr_schedules, name)(optimizer, last_batch_iteration=0, **params)
        scheduler.step(1)
        return scheduler

    return {k: v for k, v in cfg.items() if k != "scheduler"}, build
