"""Sizing a job before it runs: exact Mamba parameter counts and FLOPs (:mod:`params`), the
per-GPU memory model (:mod:`memory`), the ZeRO stage, offload and micro-batch that fit
(:mod:`fit`), the GPUs NVML sees (:mod:`gpus`), the GPU catalog with peak FLOP/s
(:mod:`flops`) and the kernels a run will use (:mod:`backends`).
"""
