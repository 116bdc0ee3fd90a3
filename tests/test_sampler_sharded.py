"""The sampler on 8 fake CPU devices gives the single-device results, with a sharded cache."""

import os
import sys
import time

import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
from sampler_worker import SAMPLER_SETTINGS, SPLIT_PROMPTS
from trainer_fixtures import start_two_processes, wait_all

from r1jax import sharding as shd
from r1jax.model.hf import load_hf_model
from r1jax.sampler import Sampler, SamplingParams
from r1jax.sampling.decode import cache_axes, segment_ends

PROMPTS = [[5, 17, 3], [40, 2, 9, 11, 60, 7, 8], [33], [12, 90, 4, 4, 71, 23, 6, 50, 19, 2, 44]]
SETTINGS = SAMPLER_SETTINGS
WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "sampler_worker.py")


@pytest.fixture(scope="module")
def single_device(hf_dirs):
    model = load_hf_model(hf_dirs["qwen2"])
    out = Sampler(model, **SETTINGS).generate(model, PROMPTS, 2, SamplingParams(temperature=0))
    return out


@pytest.mark.parametrize(
    "shape,batch_axes,kv_axis",
    [((8, 1, 1), "data", None), ((2, 2, 2), ("data", "fsdp"), "tensor")],
)
def test_sharded_greedy_equals_single_device(hf_dirs, single_device, shape, batch_axes, kv_axis):
    mesh = shd.make_mesh(shape)
    model = load_hf_model(hf_dirs["qwen2"], mesh)
    sampler = Sampler(model, mesh=mesh, **SETTINGS)
    out = sampler.generate(model, PROMPTS, 2, SamplingParams(temperature=0))
    np.testing.assert_array_equal(out.tokens, single_device.tokens)
    np.testing.assert_array_equal(out.completion_mask, single_device.completion_mask)
    np.testing.assert_allclose(out.logp_policy, single_device.logp_policy, atol=1e-5)
    assert out.finish_reason == single_device.finish_reason
    # the cache rows are split over the batch axes (and kv heads over tensor)
    rows = 8 * 2 if shape[0] == 8 else 4 * 2
    tokens, mask = np.ones((rows // 2, 16), np.int32), np.ones((rows // 2, 16), bool)
    cache, _, _ = sampler._prefill(sampler._state(model), tokens, mask, 2)
    k = cache[0]["k"]
    slot, kv = cache_axes(model.cfg)["k"]
    first = 16 + segment_ends(12, sampler.decode_segments)[0] - 1  # prompt + first segment
    assert k.shape[0] == rows and k.shape[slot] == first and k.shape[kv] == 2
    spec = [batch_axes, None, None, None]
    spec[kv] = kv_axis
    assert k.sharding.is_equivalent_to(NamedSharding(mesh, P(*spec)), k.ndim)
    assert k.addressable_shards[0].data.shape[0] == rows // shd.batch_divisor(mesh)


def test_two_processes_with_uneven_shares_draw_what_one_process_draws(hf_dirs, tmp_path):
    # Default draw ids number the prompts of all processes one after the other: process 1's
    # one prompt is prompt 3 of the call, as on one process, although its padded share starts
    # at row 4 of the global batch (shares of 3 and 1, padded to 4 each).
    argv = [sys.executable, WORKER, hf_dirs["qwen2"], str(tmp_path)]
    procs, logs = start_two_processes(tmp_path, argv)
    deadline = time.monotonic() + 240
    try:
        prompts = [p for share in SPLIT_PROMPTS for p in share]
        mesh = shd.make_mesh((8, 1, 1))
        model = load_hf_model(hf_dirs["qwen2"], mesh)
        one = Sampler(model, mesh=mesh, **SETTINGS).generate(
            model, prompts, 2, SamplingParams(temperature=1.0)
        )
    finally:
        wait_all(procs, logs, deadline)
    two = [np.load(tmp_path / f"process{pid}.npz") for pid in range(2)]
    for name in ("tokens", "completion_mask"):
        np.testing.assert_array_equal(np.concatenate([t[name] for t in two]), getattr(one, name))
    assert len(set(map(tuple, one.tokens))) == len(one.tokens)  # rows drew different samples
