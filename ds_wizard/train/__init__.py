"""The training entry point run inside each DeepSpeed rank: ``python -m ds_wizard.train``.

torch, deepspeed and transformers are imported only by ``loop`` and ``model``. A rank
imports ``ds_wizard.core`` (the run contract ``core.runspec``, the data ``core.data``) and
its own modules, never the launch package.
"""
