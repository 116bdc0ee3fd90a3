"""Tiny random model on CPU: checks that the stack runs (no files needed)."""

from r1jax.config import base_config


def get_config():
    c = base_config()
    c.model.preset = "tiny"
    c.run_dir = "runs/tiny_smoke"
    return c
