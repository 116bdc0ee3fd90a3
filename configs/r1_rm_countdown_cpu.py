"""R1's all-scenario RL stage on the CPU demo: GRPO with a learned reward model.

Continues from the demo run (``configs/r1_zero_countdown_cpu.py``, ``runs/r1_zero_countdown_cpu``)
with a reward model next to the rule rewards. The reward model is trained by ``r1jax rm`` on
preference pairs that the demo model itself produced (``r1jax traces --keep=pairs``: a correct
and a wrong completion of the same prompt), starting from the demo's weights.

A weak reward model is easily hacked (see the README's "A learned reward model" section: with
the reward model alone, or beside the rule under group-normalised advantages, held-out pass@1
fell to 0). Hence a small weight and Dr. GRPO advantages (``rl.advantage_scaling="none"``):
without the std division the reward model's score differences stay at their weight's scale
in groups where the rule gives every completion the same reward.
"""

import os

from r1jax.config import load_recipe

_DEMO = os.path.join(os.path.dirname(os.path.abspath(__file__)), "r1_zero_countdown_cpu.py")


def get_config():
    c = load_recipe(_DEMO)
    c.run_dir = "runs/r1_rm_countdown_cpu"
    c.cold_start.task = ""  # the demo run's weights already went through its cold start
    c.train.init_checkpoint = "runs/r1_zero_countdown_cpu"
    rm = c.reward_model
    rm.train_path = "runs/r1_rm_countdown_cpu/pairs_train.jsonl"
    rm.eval_path = "runs/r1_rm_countdown_cpu/pairs_eval.jsonl"
    rm.steps = 300
    rm.batch_size = 32
    rm.lr = 3e-4
    rm.checkpoint_every = 100
    rm.path = "runs/r1_rm_countdown_cpu/rm/hf"
    rm.weight = 0.05
    c.rl.advantage_scaling = "none"
    c.rewards.functions = (("countdown", 1.0), ("format_strict", 0.1))
    return c
