"""The training entry point run inside each DeepSpeed rank: ``python -m ds_wizard.train``.

torch, deepspeed and transformers are imported only by ``loop`` and ``model``; ``data``
needs numpy alone, so the launcher can validate data without starting torch.
"""
