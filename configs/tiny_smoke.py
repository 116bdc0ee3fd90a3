"""Tiny random model without a tokenizer (no files needed): `r1jax info` / `r1jax sample
--prompt="1 2 3"` smoke checks. Training needs a tokenizer: configs/r1_zero_countdown_cpu.py."""

from r1jax.config import base_config


def get_config():
    c = base_config()
    c.model.preset = "tiny"
    c.run_dir = "runs/tiny_smoke"
    return c
