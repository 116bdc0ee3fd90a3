"""The CPU demo: countdown with a tiny model and a character vocabulary, minutes on 2 cores.

Stage 1 (cold start, R1's first stage): SFT of a randomly initialised 2-layer model on a few
thousand synthetic reasoning traces. Stage 2: GRPO with rule rewards (countdown accuracy
+ format) on unseen problems; the mean reward and held-out pass@1 rise.
"""

from r1jax.cold_start import COUNTDOWN_CHARS
from r1jax.config import base_config


def get_config():
    c = base_config()
    c.run_dir = "runs/r1_zero_countdown_cpu"
    c.model.preset = "small"  # 2 layers, d=128; vocab taken from the tokenizer
    c.mesh.shape = (-1, 1, 1)
    c.mesh.cpu_devices = -1  # one XLA device per core: data parallel over the cores
    c.tokenizer.chars = COUNTDOWN_CHARS
    c.prompt.style = "plain"
    c.data.name = "countdown"
    c.data.prompt_builder = "countdown_compact"  # "Using 3 7 9 make 12"
    c.data.data_dir = "runs/tfds"
    c.data.countdown.update(
        dict(
            train_size=20_000,
            test_size=200,
            min_numbers=3,
            max_numbers=3,
            min_value=1,
            max_value=12,
            min_target=1,
            max_target=60,
        )
    )
    c.cold_start.task = "countdown"
    c.cold_start.steps = 400
    c.cold_start.batch_size = 64
    c.cold_start.lr = 2e-3
    c.cold_start.examples = 4000
    c.cold_start.eval_examples = 256  # held-out loss of the SFT (sft/eval_loss) every 100 steps
    c.cold_start.eval_every = 100
    c.sampling.max_prompt_len = 32
    c.sampling.prompt_buckets = (32,)
    c.sampling.max_new_tokens = 64
    c.sampling.temperature = 1.0
    c.rewards.functions = (("countdown", 1.0), ("format_strict", 0.1))
    c.rewards.num_workers = 1
    c.rl.prompts_per_step = 16
    c.rl.group_size = 8
    c.rl.loss_type = "grpo"
    c.rl.beta = 0.0
    c.optim.lr = 1e-4
    c.optim.b2 = 0.99
    c.optim.grad_clip = 1.0
    c.train.steps = 150
    c.train.eval_every = 50
    c.train.eval_prompts = 96
    c.train.eval_samples = 4
    c.train.checkpoint_every = 50
    return c
