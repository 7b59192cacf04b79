"""Experiment configs load, carry the paper's settings, and reject unknown keys / bad values by name."""

import glob
import os

import pytest
from absl import flags
from ml_collections import config_flags

from omnir1_jax import config as config_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXP = os.path.join(ROOT, "experiments")


@pytest.mark.parametrize("name", ["synthetic_tiny", "refavs_omni_r1_7b", "revos_omni_r1_7b", "joint_omni_r1_7b"])
def test_every_experiment_loads_and_validates(name):
    cfg = config_lib.load_config(os.path.join(EXP, name + ".py"))
    assert cfg.name == name


def test_all_experiment_files_are_covered():
    files = {os.path.basename(p)[:-3] for p in glob.glob(os.path.join(EXP, "*.py"))} - {"__init__"}
    assert files == {"synthetic_tiny", "refavs_omni_r1_7b", "revos_omni_r1_7b", "joint_omni_r1_7b"}


def test_paper_settings_in_7b_configs():
    c = config_lib.load_config(os.path.join(EXP, "revos_omni_r1_7b.py"))
    assert c.rl.num_generations == 8 and c.rl.beta == 0.04 and c.rl.temperature == 1.0 and c.rl.top_p == 0.95
    assert c.optim.learning_rate == 1e-6 and c.optim.weight_decay == 0.01 and c.optim.schedule == "cosine"
    assert c.optim.grad_clip == 5.0
    assert (c.data.min_frames, c.data.max_frames, c.data.eval_max_frames) == (16, 24, 24)
    assert c.data.video_max_pixels == 128 * 28 * 28 and c.data.ground_max_pixels == 900 * 28 * 28
    assert c.rl.adv_std_ddof == 1 and c.rl.adv_eps == 1e-4 and c.rl.loss_agg == "seq-mean-token-mean"


@pytest.mark.parametrize("variant, expected", [
    ("released", dict(alpha_k=1.0, alpha_k_ratio=1.0, alpha_a=1.0, alpha_g=0.0)),
    ("internal", dict(alpha_k=1.0, alpha_k_ratio=0.0, alpha_a=1.0, alpha_g=2.0)),
])
def test_reward_variants(variant, expected):
    c = config_lib.load_config(os.path.join(EXP, "revos_omni_r1_7b.py") + ":" + variant)
    assert c.reward.variant == variant
    assert {k: c.reward[k] for k in expected} == expected


def test_unknown_override_key_is_rejected_by_name():
    with pytest.raises(config_lib.ConfigError, match="config.rl.betaa"):
        config_lib.load_config(os.path.join(EXP, "synthetic_tiny.py"), overrides={"rl.betaa": 0.0})


def test_unknown_key_in_experiment_file_is_rejected():
    c = config_lib.default_config()
    c.rl.not_a_field = 3
    with pytest.raises(config_lib.ConfigError, match="config.rl.not_a_field"):
        config_lib.validate(c)


@pytest.mark.parametrize("key, value, message", [
    ("data.min_frames", 30, "config.data.min_frames"),
    ("rl.top_p", 1.5, "config.rl.top_p"),
    ("rl.micro_batch_completions", 7, "config.rl.micro_batch_completions"),
    ("rl.num_generations", 1, "config.rl.num_generations"),
    ("rl.loss_agg", "sum", "config.rl.loss_agg"),
    ("reward.alpha_g", 5.0, "config.reward.alpha_g"),
    ("mesh.fsdp", 0, "config.mesh.fsdp"),
    ("data.dataset", "kinetics", "config.data.dataset"),
    ("rl.sam_tracks_per_clip", -1, "config.rl.sam_tracks_per_clip"),
])
def test_inconsistent_values_name_the_key(key, value, message):
    with pytest.raises(config_lib.ConfigError, match=message.replace(".", r"\.")):
        config_lib.load_config(os.path.join(EXP, "synthetic_tiny.py"), overrides={key: value})


def test_custom_reward_weights_need_custom_variant():
    c = config_lib.load_config(os.path.join(EXP, "synthetic_tiny.py"),
                               overrides={"reward.variant": "custom", "reward.alpha_g": 5.0})
    assert c.reward.alpha_g == 5.0


def test_command_line_override_through_config_flags():
    argv = ["prog", f"--config={os.path.join(EXP, 'synthetic_tiny.py')}", "--config.rl.beta=0.0"]
    fv = flags.FlagValues()
    config_flags.DEFINE_config_file("config", default=None, flag_values=fv, lock_config=True, sys_argv=argv)
    fv(argv)
    assert fv.config.rl.beta == 0.0
    config_lib.validate(fv.config)
    argv2 = ["prog", f"--config={os.path.join(EXP, 'synthetic_tiny.py')}", "--config.rl.betaa=0.0"]
    fv2 = flags.FlagValues()
    config_flags.DEFINE_config_file("config", default=None, flag_values=fv2, lock_config=True, sys_argv=argv2)
    with pytest.raises(Exception, match="betaa"):
        fv2(argv2)


def test_training_sources_from_config(tmp_path):
    from omnir1_jax.rl.sft import data_sources

    c = config_lib.load_config(os.path.join(EXP, "revos_omni_r1_7b.py"),
                               overrides={"data.revos_root": "/r", "data.mevis_root": "/m"})
    assert data_sources(c, str(tmp_path)) == [("revos", "revos", "/r", 1.0), ("mevis", "mevis", "/m", 1.0)]
    c = config_lib.load_config(os.path.join(EXP, "joint_omni_r1_7b.py"))
    with pytest.raises(ValueError, match="data.refavs_root"):
        data_sources(c, str(tmp_path))


def test_parse_overrides_decodes_literals_and_json_and_rejects_malformed():
    from omnir1_jax.config import ConfigError, parse_overrides

    got = parse_overrides(["train.num_steps=3", "data.mixture=revos:1", "train.progress_bar=false",
                           "data.ground_hw=(96,128)", "optim.learning_rate=-1.5e-4", "eval.final_table=True"])
    assert got == {"train.num_steps": 3, "data.mixture": "revos:1", "train.progress_bar": False,
                   "data.ground_hw": (96, 128), "optim.learning_rate": -1.5e-4, "eval.final_table": True}
    with pytest.raises(ConfigError, match="not KEY=VALUE"):
        parse_overrides(["train.num_steps"])


def test_step_knobs_reach_the_grpo_settings():
    """rl.share_prompt_prefix, rl.sam_tracks_per_clip, rl.refavs_temperature: defaults, overrides, checks."""
    from omnir1_jax.rl.grpo_settings import GRPOSettings

    path = os.path.join(EXP, "revos_omni_r1_7b.py") + ":internal"
    c = config_lib.load_config(path)
    s = GRPOSettings.from_config(c, task="vos", stop_ids=(1,), pad_id=0)
    assert s.share_prompt_prefix is True and s.sam_tracks_per_clip == 0 and s.use_sam
    c = config_lib.load_config(path, overrides={"rl.share_prompt_prefix": False, "rl.sam_tracks_per_clip": 8})
    s = GRPOSettings.from_config(c, task="vos", stop_ids=(1,), pad_id=0)
    assert s.share_prompt_prefix is False and s.sam_tracks_per_clip == 8
    assert s.temperature == GRPOSettings.from_config(c, task="refavs", stop_ids=(1,), pad_id=0).temperature == 1.0
    c = config_lib.load_config(path, overrides={"rl.refavs_temperature": 0.45})  # released FUSE_TEMPERATURE
    assert GRPOSettings.from_config(c, task="refavs", stop_ids=(1,), pad_id=0).temperature == 0.45
    assert GRPOSettings.from_config(c, task="vos", stop_ids=(1,), pad_id=0).temperature == 1.0
    with pytest.raises(config_lib.ConfigError, match=r"config\.rl\.refavs_temperature"):
        config_lib.load_config(path, overrides={"rl.refavs_temperature": -1.0})
    with pytest.raises(config_lib.ConfigError, match=r"config\.rl\.kl_anchor"):
        config_lib.load_config(path, overrides={"rl.kl_anchor": "sft"})
    with pytest.raises(config_lib.ConfigError, match=r"config\.rl\.sam_tracks_per_clip"):
        config_lib.load_config(path, overrides={"rl.sam_tracks_per_clip": 8,
                                                "segmenter.train_propagation": "bidirectional"})
