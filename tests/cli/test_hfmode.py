"""``--hf``: ds-wizard's fill of "auto" against transformers' real HfTrainerDeepSpeedConfig.

The class is imported from transformers and its own ``trainer_config_process`` /
``trainer_config_finalize`` run. When accelerate (its base class) is not installed,
transformers falls back to ``object`` as the base; the three lookup helpers accelerate
provides (``find_config_node``, ``get_value``, ``is_true``, ``is_zero3``) are then given
here with accelerate's semantics. Everything compared is transformers' code.
"""

from __future__ import annotations

import copy
import json
from types import SimpleNamespace

import pytest
from click.testing import CliRunner

from ds_wizard.cli import main
from ds_wizard.core.check.hfmode import HfArgs, fill_like_trainer, parse_hf_args

integration = pytest.importorskip("transformers.integrations.deepspeed")


class _AccelerateLookups:
    """accelerate.utils.deepspeed.HfDeepSpeedConfig's lookups, for when it is absent."""

    def find_config_node(self, ds_key_long):
        config = self.config
        nodes = ds_key_long.split(".")
        ds_key = nodes.pop()
        for node in nodes:
            config = config.get(node)
            if config is None:
                return None, ds_key
        return config, ds_key

    def get_value(self, ds_key_long, default=None):
        config, ds_key = self.find_config_node(ds_key_long)
        if config is None:
            return default
        return config.get(ds_key, default)

    def is_true(self, ds_key_long):
        value = self.get_value(ds_key_long)
        return False if value is None else bool(value)

    def is_zero3(self):
        return self.get_value("zero_optimization.stage") == 3


def real_trainer_config(cfg: dict):
    cls = integration.HfTrainerDeepSpeedConfig
    if not hasattr(cls, "find_config_node"):
        cls = type("HfTrainerDeepSpeedConfigForTest", (cls, _AccelerateLookups), {})
    obj = object.__new__(cls)
    obj.config = copy.deepcopy(cfg)
    obj._dtype = None
    obj.mismatches = []
    return obj


def trainer_args(args: HfArgs) -> SimpleNamespace:
    return SimpleNamespace(**vars(args), get_warmup_steps=lambda steps: 0)


CONFIGS = {
    "all-auto": {"train_batch_size": "auto", "train_micro_batch_size_per_gpu": "auto",
                 "gradient_accumulation_steps": "auto", "gradient_clipping": "auto",
                 "optimizer": {"type": "AdamW", "params": {"lr": "auto", "betas": "auto",
                                                           "eps": "auto",
                                                           "weight_decay": "auto"}},
                 "scheduler": {"type": "WarmupLR", "params": {"warmup_min_lr": "auto",
                                                              "warmup_max_lr": "auto"}},
                 "fp16": {"enabled": "auto"}, "bf16": {"enabled": "auto"},
                 "zero_optimization": {"stage": 3}},
    "hard-coded-agree": {"train_batch_size": 64, "train_micro_batch_size_per_gpu": 4,
                         "gradient_accumulation_steps": 2, "gradient_clipping": 1.0},
    "hard-coded-disagree": {"train_batch_size": 16, "train_micro_batch_size_per_gpu": 2,
                            "gradient_accumulation_steps": "auto", "gradient_clipping": 0.5,
                            "optimizer": {"params": {"lr": 3e-4, "betas": [0.9, 0.95]}},
                            "bf16": {"enabled": True}},
    "partial": {"train_micro_batch_size_per_gpu": "auto", "gradient_accumulation_steps": 8,
                "zero_optimization": {"stage": 2}},
    "no-batch-keys": {"zero_optimization": {"stage": 2}, "fp16": {"enabled": False}},
}
ARGS = {
    "4x2 on 8": HfArgs(per_device_train_batch_size=4, gradient_accumulation_steps=2,
                       world_size=8),
    "defaults on 1": HfArgs(),
    "bf16 lr 3e-4": HfArgs(per_device_train_batch_size=2, gradient_accumulation_steps=8,
                           world_size=1, bf16=True, learning_rate=3e-4, adam_beta2=0.95),
    "auto_find": HfArgs(per_device_train_batch_size=16, world_size=2,
                        auto_find_batch_size=True),
}


@pytest.mark.parametrize("cfg_name", sorted(CONFIGS))
@pytest.mark.parametrize("args_name", sorted(ARGS))
def test_fill_and_mismatches_agree_with_transformers(cfg_name, args_name):
    cfg, args = CONFIGS[cfg_name], ARGS[args_name]
    theirs = real_trainer_config(cfg)
    theirs.trainer_config_process(trainer_args(args),
                                  auto_find_batch_size=args.auto_find_batch_size)
    ours = fill_like_trainer(cfg, args)
    assert ours.config == theirs.config
    assert ours.mismatches == theirs.mismatches


def test_mismatch_error_is_transformers_own_text():
    cfg, args = CONFIGS["hard-coded-disagree"], ARGS["4x2 on 8"]
    theirs = real_trainer_config(cfg)
    theirs.trainer_config_process(trainer_args(args))
    model = SimpleNamespace(config=SimpleNamespace(hidden_size=768))
    with pytest.raises(ValueError) as info:
        theirs.trainer_config_finalize(trainer_args(args), model, 1000)
    assert fill_like_trainer(cfg, args).error == str(info.value)


def test_parse_hf_args_flag_and_file(tmp_path):
    path = tmp_path / "args.json"
    path.write_text(json.dumps({"per_device_train_batch_size": 2, "learning_rate": 1e-3,
                                "output_dir": "out", "bf16": True}))
    args = parse_hf_args("gradient_accumulation_steps=4,per_device_train_batch_size=8", path, 4)
    assert (args.per_device_train_batch_size, args.gradient_accumulation_steps,
            args.world_size, args.learning_rate, args.bf16) == (8, 4, 4, 1e-3, True)
    assert parse_hf_args("world_size=16", None, 4).world_size == 16


def test_check_hf_reports_the_trainers_mismatch_error(tmp_path):
    path = tmp_path / "ds.json"
    path.write_text(json.dumps(CONFIGS["hard-coded-disagree"]))
    result = CliRunner().invoke(main, ["check", str(path), "--num-gpus", "8", "--hf",
                                       "per_device_train_batch_size=4,"
                                       "gradient_accumulation_steps=2", "--json"])
    data = json.loads(result.stdout)
    assert result.exit_code == 1
    assert data["errors"][0].startswith("Please correct the following DeepSpeed config values")
    assert "- ds train_batch_size=16 vs hf train_batch_size (calculated)=64" in data["errors"][0]


def test_check_hf_fills_auto_then_gives_deepspeeds_verdict(tmp_path):
    path = tmp_path / "ds.json"
    path.write_text(json.dumps(CONFIGS["all-auto"]))
    ok = CliRunner().invoke(main, ["check", str(path), "--num-gpus", "8", "--hf",
                                   "per_device_train_batch_size=4,"
                                   "gradient_accumulation_steps=2"])
    assert ok.exit_code == 0, ok.output
    assert "train_batch_size=64" in ok.output
    # without --hf the same file fails in standalone DeepSpeed ("auto" // "auto")
    plain = CliRunner().invoke(main, ["check", str(path), "--num-gpus", "8"])
    assert plain.exit_code == 1


@pytest.mark.parametrize(("spec", "needle"), [("per_device_train_batch_size", "key=value"),
                                              ("per_device_train_batch_size=0", "not a valid"),
                                              ("gradient_accumulation_steps=two", "not a valid")])
def test_bad_hf_arguments_are_one_line_errors(tmp_path, spec, needle):
    path = tmp_path / "ds.json"
    path.write_text(json.dumps(CONFIGS["all-auto"]))
    result = CliRunner().invoke(main, ["check", str(path), "--num-gpus", "2", "--hf", spec])
    assert result.exit_code == 1
    assert result.stderr.startswith("error: ") and needle in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
