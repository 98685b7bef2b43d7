"""Every default a user can override, in one place; the CLI's ``--help`` shows these."""

from __future__ import annotations

# plan to this fraction of one GPU's memory (the rest: fragmentation, NCCL buffers, …)
HEADROOM = 0.9
# ranks started when no GPU is visible (the CPU demo)
CPU_DEFAULT_RANKS = 2
# on a stop, how long the ranks get to reach the end of a step and save a checkpoint
GRACE_S = 60.0
# after the grace period and SIGTERM, how long before SIGKILL
KILL_AFTER_S = 10.0
# how long the job's processes may outlive the launcher before they are killed
LINGER_S = 45.0
# where `ds-wizard launch` creates run directories
RUNS_DIR = "runs"
