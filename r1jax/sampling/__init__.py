"""Jitted batched KV-cache sampling: one sampler for rollouts, rejection sampling, eval."""

from r1jax.sampling.ops import filter_logprobs, policy_logprob, sample_token
from r1jax.sampling.params import DeviceParams, SamplingParams
from r1jax.sampling.sampler import DEFAULT_PROMPT_BUCKETS, SampleOutput, Sampler

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
