"""The jitted batched KV-cache sampler (implemented in :mod:`r1jax.sampling`)."""

from r1jax.sampling import (
    DEFAULT_PROMPT_BUCKETS,
    DeviceParams,
    SampleOutput,
    Sampler,
    SamplingParams,
    filter_logprobs,
    policy_logprob,
    sample_token,
)

__all__ = [
    "DEFAULT_PROMPT_BUCKETS",
    "DeviceParams",
    "SampleOutput",
    "Sampler",
    "SamplingParams",
    "filter_logprobs",
    "policy_logprob",
    "sample_token",
]
