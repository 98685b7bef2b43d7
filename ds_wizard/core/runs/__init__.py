"""A run on disk and in flight: the run directory and its checkpoints (:mod:`rundir`,
:mod:`integrity`), the run contract between the launch side and each rank
(:mod:`runspec`), the supervisor's ``state.json`` and a run's status (:mod:`runstate`),
``metrics.jsonl`` (:mod:`metrics`), the training data without downloads (:mod:`data`),
the first run's compiled ops and first step (:mod:`jit_ops`, :mod:`first_step`), and a
resume on another world size (:mod:`reshape`).
"""
