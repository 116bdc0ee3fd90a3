"""The jitted batched KV-cache sampler (implemented in :mod:`r1jax.sampling`)."""

from r1jax.sampling import *  # noqa: F403  (the public sampling API, one import path)
from r1jax.sampling import __all__  # noqa: F401
