"""The batch triple: DeepSpeed's batch arithmetic reproduced branch for branch
(:mod:`batchmath`), nodes × ranks and hostfiles, the one world-size function
(:mod:`topology`), and the batch a preset asks for on a given world size (:mod:`choice`).
"""
