"""The batched KV-cache sampler used by every stage (rollouts, rejection sampling, eval).

``Sampler`` holds two jitted programs (see :mod:`r1jax.sampling.decode`), compiled once per
(batch bucket, prompt bucket, G, sampling mode); the model weights are an argument, so the
trainer passes its current ``nnx.State`` on every call without rebuilding anything.

Host side per call: tokenize, left-pad to the prompt bucket, pad the batch to a batch
bucket with dummy prompts (finished from the start, dropped from the output), run prefill
and decode, fetch the results once, cut stop strings (:mod:`r1jax.sampling.stops`), decode
texts.

Rows of the output are grouped by prompt: row ``i * G + j`` is sample j of prompt i.

Multi-process (a mesh over devices of several JAX processes): every process calls
``generate`` with its own prompts (possibly a different number), the calls agree on the
padded shapes, run as one global batch whose rows are laid out process by process (each
process's prompts on its own devices, see :func:`r1jax.sharding.process_batch_shard`), and
each process gets back the rows of its own prompts only. ``generate`` is then a collective:
every process must call it the same number of times.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from r1jax import sharding as shd
from r1jax.model import ModelConfig, Transformer
from r1jax.sampling import decode as dec
from r1jax.sampling import stops
from r1jax.sampling.params import SamplingParams

DEFAULT_PROMPT_BUCKETS = (32, 64, 128, 256, 512, 1024, 2048, 4096)
log = logging.getLogger(__name__)


class _SkipUnknownIds:
    """Decodes with the ids past a tokenizer's vocabulary left out, as Hugging Face tokenizers
    do: a model may embed more ids than its tokenizer has (Qwen2.5 pads 151,665 to 151,936),
    and the sampler draws from the model's whole vocabulary."""

    def __init__(self, tokenizer: Any):
        self.tokenizer = tokenizer

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        known = [int(i) for i in ids if 0 <= i < self.tokenizer.vocab_size]
        return self.tokenizer.decode(known, skip_special_tokens)


@dataclasses.dataclass
class SampleOutput:
    """Host NumPy results of :meth:`Sampler.generate` (B prompts, G samples, N columns).

    With several processes, B is this process's prompts and the arrays hold their rows only.

    ``logp_policy`` is the log-prob under the unmodified model (``log_softmax`` of the raw
    logits): GRPO's ``logp_old``. ``logp_sampling`` is under the distribution that was
    actually sampled (after temperature / top-k / top-p / min-p; 0 for greedy): for
    importance weights against the behaviour policy. Both are 0 where the mask is 0.
    """

    prompt_ids: np.ndarray  # [B, P] int32, left padded with pad_id
    prompt_mask: np.ndarray  # [B, P] bool
    tokens: np.ndarray  # [B*G, N] int32 completions, pad_id after the end
    completion_mask: np.ndarray  # [B*G, N] bool, True up to and including eos / stop
    logp_policy: np.ndarray  # [B*G, N] float32
    logp_sampling: np.ndarray  # [B*G, N] float32
    lengths: np.ndarray  # [B*G] int32 = completion_mask.sum(-1)
    finish_reason: list[str]  # [B*G] "eos" | "stop" | "length"
    prompt_index: np.ndarray  # [B*G] int32, prompt of each row
    texts: list[str] | None = None  # [B*G] decoded completions when a tokenizer is given

    @property
    def num_samples(self) -> int:
        """G, the samples per prompt."""
        return len(self.lengths) // max(len(self.prompt_ids), 1)


@functools.lru_cache(maxsize=32)
def _programs(
    graphdef: nnx.GraphDef,
    mesh: Mesh | None,
    max_new_tokens: int,
    cache_dtype: Any,
    cfg: ModelConfig,
    kv_tensor: bool,
    fuse: tuple[bool, bool],
    segments: int,
) -> tuple[Any, Any]:
    """The jitted (prefill, decode) pair, shared by samplers with the same settings (so an
    eval sampler and a rollout sampler of one model compile once)."""
    prefill = functools.partial(
        dec.prefill,
        graphdef,
        max_new_tokens=max_new_tokens,
        cache_dtype=cache_dtype,
        segments=segments,
    )
    decode = functools.partial(
        dec.decode, graphdef, max_new_tokens=max_new_tokens, fuse=fuse, segments=segments
    )
    # one segment updates the prefill cache in place; more grow it into new buffers
    donate = ("cache",) if segments == 1 else ()
    if mesh is None:
        return (
            jax.jit(prefill, static_argnums=(3,)),
            jax.jit(decode, donate_argnames=donate),
        )
    rows2, rows1 = shd.batch_sharding(mesh, 2), shd.batch_sharding(mesh, 1)
    cache_specs = {}
    for name, (_, kv_axis) in dec.cache_axes(cfg).items():
        spec = [rows2.spec[0], None, None, None]
        spec[kv_axis] = "tensor" if kv_tensor else None
        cache_specs[name] = NamedSharding(mesh, P(*spec))
    cache_sh = [dict(cache_specs) for _ in range(cfg.num_layers)]
    prefill_jit = jax.jit(
        shd.on_mesh(prefill, mesh),
        static_argnums=(3,),
        in_shardings=(None, rows2, rows2),
        out_shardings=(cache_sh, rows2, rows2),
    )
    names = ("tokens", "mask", "logp_policy", "logp_sampling")
    out = {**dict.fromkeys(names, rows2), "finish": rows1, "cache": cache_sh}
    decode_jit = jax.jit(shd.on_mesh(decode, mesh), donate_argnames=donate, out_shardings=out)
    return prefill_jit, decode_jit


def _check_draw_ids(draw_ids: Sequence[int] | None, b: int) -> np.ndarray | None:
    """``draw_ids`` as a ``[b]`` array after checking it (None stays None)."""
    if draw_ids is None:
        return None
    given = np.asarray(draw_ids)
    if given.shape != (b,) or not np.issubdtype(given.dtype, np.integer):
        raise ValueError(f"draw_ids: need {b} ints (one per prompt), got {draw_ids!r}")
    if b and (given.min() < 0 or given.max() >= 2**31):
        raise ValueError(f"draw_ids: need ints in [0, 2**31), got {draw_ids!r}")
    return given


def _draw_rows(given: np.ndarray | None, bp: int, g: int, first: int) -> np.ndarray:
    """The ``[bp * g, 2]`` int32 ``(prompt id, sample index)`` rows of :func:`decode`'s
    ``draw_ids`` for the ``given`` prompt ids padded to ``bp`` prompts, G = ``g``; default
    prompt ids: ``first``, ``first + 1``, ... (padding rows draw nothing that is kept)."""
    ids = np.arange(bp, dtype=np.int64) + first
    if given is not None:
        ids[: len(given)] = given
    rows = np.stack([np.repeat(ids, g), np.tile(np.arange(g), bp)], axis=1)
    return rows.astype(np.int32)


def _round_up_bucket(n: int, buckets: Sequence[int]) -> int | None:
    return next((b for b in buckets if b >= n), None)


class Sampler:
    """Jitted batched sampler with a preallocated, sharded KV cache.

    Args:
      model: a :class:`Transformer` or a ``(graphdef, ModelConfig)`` pair.
      mesh: device mesh; batch rows go over ``data``/``fsdp``, kv heads over ``tensor``
        (when divisible), weights by ``rules``. ``None``: wherever the weights live.
      tokenizer: anything with ``encode``, ``decode``, ``eos_ids``, ``pad_id``; needed for
        string prompts, stop strings and ``texts``.
      max_prompt_len: the largest prompt bucket.
      max_new_tokens: N, the compiled completion length (cache of at most P + N slots).
      prompt_buckets: padded prompt lengths; those above ``max_prompt_len`` are dropped.
      batch_buckets: padded numbers of prompts (multiples of the mesh batch size); default
        the mesh batch size times powers of two.
      cache_dtype: KV cache dtype (default: the model's compute dtype).
      rules: logical sharding rules for the weights.
      eos_ids / pad_id: override the tokenizer's / model config's.
      fuse_projections: decode with q/k/v and gate/up fused into one GEMM each, built once
        per call (:func:`r1jax.model.prepare_for_decoding`; q/k/v only when the mesh has no
        tensor parallelism). Costs a compute-dtype copy of those weights during the call;
        turn off when memory is tight.
      decode_segments: the decode loop runs in this many segments of equal step spans, each
        attending over the cache slots its steps can have written (prompt + its last step)
        instead of all ``P + N``: on average about ``P + N (1 + 1/segments) / 2`` slots are
        read per step. Each segment is one more compiled loop body.
    """

    def __init__(
        self,
        model: Transformer | tuple[nnx.GraphDef, ModelConfig],
        mesh: Mesh | None = None,
        tokenizer: Any = None,
        max_prompt_len: int = 128,
        max_new_tokens: int = 64,
        prompt_buckets: Sequence[int] = DEFAULT_PROMPT_BUCKETS,
        batch_buckets: Sequence[int] | None = None,
        cache_dtype: Any = None,
        rules: Mapping[str, Any] = shd.DEFAULT_RULES,
        eos_ids: Sequence[int] | None = None,
        pad_id: int | None = None,
        fuse_projections: bool = True,
        decode_segments: int = 4,
    ):
        if isinstance(model, nnx.Module):
            self.graphdef, self.cfg = nnx.split(model)[0], model.cfg
        else:
            self.graphdef, self.cfg = model
        cfg = self.cfg
        for name, val in (
            ("max_prompt_len", max_prompt_len),
            ("max_new_tokens", max_new_tokens),
            ("decode_segments", decode_segments),
        ):
            if not isinstance(val, int) or val < 1:
                raise ValueError(f"Sampler {name}={val!r} must be an int >= 1")
        if max_prompt_len + max_new_tokens > cfg.max_position_embeddings:
            raise ValueError(
                f"Sampler max_prompt_len={max_prompt_len} + max_new_tokens={max_new_tokens} "
                f"exceeds the model's max_position_embeddings={cfg.max_position_embeddings}"
            )
        self.mesh, self.tokenizer, self.rules = mesh, tokenizer, dict(rules)
        self._warned_unknown_ids = False
        self.fuse_projections = bool(fuse_projections)
        self.decode_segments = decode_segments
        self.max_prompt_len, self.max_new_tokens = max_prompt_len, max_new_tokens
        self.prompt_buckets = tuple(
            sorted({b for b in prompt_buckets if 0 < b < max_prompt_len} | {max_prompt_len})
        )
        self.batch_multiple = shd.batch_divisor(mesh) if mesh is not None else 1
        if batch_buckets is not None:
            bad = [b for b in batch_buckets if b < 1 or b % self.batch_multiple]
            if bad or not batch_buckets:
                raise ValueError(
                    f"Sampler batch_buckets={tuple(batch_buckets)}: each must be a positive "
                    f"multiple of the mesh batch size {self.batch_multiple}"
                )
            batch_buckets = tuple(sorted(batch_buckets))
        self.batch_buckets = batch_buckets
        self.cache_dtype = jnp.dtype(cache_dtype or cfg.dtype)
        if eos_ids is None:
            eos_ids = getattr(tokenizer, "eos_ids", None)
        if eos_ids is None:
            eos = cfg.eos_token_id
            eos_ids = [] if eos is None else [eos] if isinstance(eos, int) else list(eos)
        self.eos_ids = [int(i) for i in eos_ids]
        if pad_id is None:
            pad_id = getattr(tokenizer, "pad_id", None)
        self.pad_id = int(pad_id if pad_id is not None else (self.eos_ids or [0])[0])
        self._state_shardings: dict[Any, Any] = {}
        self._multiprocess = shd.spans_processes(mesh)
        self._block, self._procs = shd.process_batch_shard(mesh) if self._multiprocess else (0, 1)
        self._base_key = jax.random.key(0)
        self._build_programs()

    # ------------------------------------------------------------------ device programs

    def _build_programs(self) -> None:
        tensor = 1 if self.mesh is None else self.mesh.shape.get("tensor", 1)
        kv_tensor = tensor > 1 and self.cfg.num_kv_heads % tensor == 0
        fuse = (self.fuse_projections and tensor == 1, self.fuse_projections)
        self._prefill, self._decode = _programs(
            self.graphdef,
            self.mesh,
            self.max_new_tokens,
            self.cache_dtype,
            self.cfg,
            kv_tensor,
            fuse,
            self.decode_segments,
        )

    def compile_count(self) -> int:
        """Compiled variants of the prefill and decode programs so far (shared with other
        samplers of the same model and settings)."""
        return self._prefill._cache_size() + self._decode._cache_size()

    def _state(self, state_or_model: nnx.State | nnx.Module) -> nnx.State:
        if isinstance(state_or_model, nnx.Module):
            state = nnx.state(state_or_model)
        elif isinstance(state_or_model, nnx.State):
            state = state_or_model
        else:
            raise TypeError(
                f"generate expects an nnx.State or the model, got {type(state_or_model).__name__}"
            )
        if self.mesh is None:
            return state
        treedef = jax.tree.structure(state)
        if treedef not in self._state_shardings:
            self._state_shardings[treedef] = shd.state_shardings(state, self.mesh, self.rules)
        return jax.device_put(state, self._state_shardings[treedef])  # no-op when in place

    # ------------------------------------------------------------------ host side

    def _prompt_ids(self, prompts: Sequence[str] | Sequence[Sequence[int]]) -> list[list[int]]:
        if isinstance(prompts, str | bytes) or not isinstance(prompts, Sequence | np.ndarray):
            raise ValueError("prompts must be a non-empty list of strings or of token-id lists")
        if len(prompts) == 0:
            raise ValueError("prompts is empty: nothing to sample")
        rows = []
        for i, p in enumerate(prompts):
            if isinstance(p, str):
                if self.tokenizer is None:
                    raise ValueError(f"prompt {i} is a string but the Sampler has no tokenizer")
                p = self.tokenizer.encode(p)
            ids = [int(t) for t in np.asarray(p).reshape(-1)]
            if not ids:
                raise ValueError(f"prompt {i} is empty (0 tokens)")
            bad = [t for t in ids if not 0 <= t < self.cfg.vocab_size]
            if bad:
                raise ValueError(
                    f"prompt {i}: token id {bad[0]} outside the vocabulary [0, "
                    f"{self.cfg.vocab_size})"
                )
            if len(ids) > self.max_prompt_len:
                raise ValueError(
                    f"prompt {i} has {len(ids)} tokens > the largest prompt bucket "
                    f"max_prompt_len={self.max_prompt_len}"
                )
            rows.append(ids)
        return rows

    def _batch_bucket(self, n: int) -> int:
        if self.batch_buckets is None:
            m = self.batch_multiple
            return m * (1 << max(0, -(-n // m) - 1).bit_length())
        b = _round_up_bucket(n, self.batch_buckets)
        if b is None:
            raise ValueError(
                f"{n} prompts exceed the largest batch bucket {self.batch_buckets[-1]}"
            )
        return b

    def _stop_arrays(self, params: SamplingParams) -> tuple[np.ndarray, np.ndarray]:
        eos = [] if params.ignore_eos else self.eos_ids
        eos_arr = np.full(max(4, -(-len(eos) // 4) * 4), -1, np.int32)
        eos_arr[: len(eos)] = eos
        seqs = [[t] for t in params.stop_token_ids]
        seqs += [stops.encode_plain(self.tokenizer, s) for s in params.stop_strings]
        return eos_arr, stops.stop_sequence_array(seqs)

    def generate(
        self,
        state_or_model: nnx.State | nnx.Module,
        prompts: Sequence[str] | Sequence[Sequence[int]],
        num_samples: int = 1,
        params: SamplingParams | None = None,
        key: jax.Array | None = None,
        draw_ids: Sequence[int] | None = None,
    ) -> SampleOutput:
        """Samples ``num_samples`` completions for each prompt.

        Args:
          state_or_model: the weights (``nnx.State`` of the model, or the model itself).
          prompts: B strings (needs a tokenizer) or B lists of token ids.
          num_samples: G completions per prompt; the prompt is prefilled once for all G.
          params: sampling settings (default: temperature 1, no truncation).
          key: PRNG key for this call; default ``fold_in(key(0), params.seed)``.
          draw_ids: ``[B]`` ints in ``[0, 2**31)``, each prompt's identity for the random
            draws: sample j of a prompt draws from ``key``, its id and j alone, so it does not
            change with the other prompts of the call, their number, order or padding, the
            process count or G (sample j is the same for any G > j). Default: the
            prompts' places in the call's prompts, those of all processes one after the
            other in the order of the batch blocks they hold (process 0's first), as one
            process given all of them would number them.
        Returns:
          :class:`SampleOutput` with host NumPy arrays.
        """
        params = params if params is not None else SamplingParams()
        params.validate(
            max_new_tokens_limit=self.max_new_tokens,
            vocab_size=self.cfg.vocab_size,
            has_tokenizer=self.tokenizer is not None,
        )
        if not isinstance(num_samples, int) or num_samples < 1:
            raise ValueError(f"num_samples={num_samples!r} must be an int >= 1")
        rows = self._prompt_ids(prompts)
        b, g = len(rows), num_samples
        given_ids = _check_draw_ids(draw_ids, b)  # (before the collective below)
        longest, bp, first = max(len(r) for r in rows), None, 0
        if self._multiprocess:  # every process must run the same global shapes
            from r1jax.distributed import allgather

            shares = allgather(np.array([[b, longest, self._block]]))  # [processes, 3]
            most, longest = shares[:, :2].max(axis=0)
            bp = self._batch_bucket(int(most) * self._procs) // self._procs
            first = int(shares[shares[:, 2] < self._block, 0].sum())  # earlier blocks' prompts
        p = _round_up_bucket(int(longest), self.prompt_buckets)
        n = params.max_new_tokens or self.max_new_tokens
        params.validate(prompt_len=p, max_position_embeddings=self.cfg.max_position_embeddings)
        bp = bp or self._batch_bucket(b)
        tokens = np.full((bp, p), self.pad_id, np.int32)
        mask = np.zeros((bp, p), bool)
        for i, r in enumerate(rows):
            tokens[i, p - len(r) :], mask[i, p - len(r) :] = r, True
        mask[b:, -1] = True  # dummy rows: one pad token, finished before they start
        eos_arr, stop_arr = self._stop_arrays(params)
        if key is None:
            key = jax.random.fold_in(self._base_key, params.seed)
        ids = _draw_rows(given_ids, bp, g, first)

        state = self._state(state_or_model)
        active = np.arange(bp * g) < b * g  # [Bp * G] False on batch padding rows
        if self._multiprocess:  # (each process pads its own rows: padding inside the batch)
            rows2, rows1 = shd.batch_sharding(self.mesh, 2), shd.batch_sharding(self.mesh, 1)
            tokens_in = shd.host_to_global(tokens, rows2)
            mask_in = shd.host_to_global(mask, rows2)
            active = shd.host_to_global(active, rows1)
            ids = shd.host_to_global(ids, rows2)
            key = shd.global_from_full(jax.random.key_data(key), shd.replicated(self.mesh))
            key = jax.random.wrap_key_data(key, impl=jax.random.key_impl(self._base_key))
        else:
            tokens_in, mask_in = tokens, mask
            if self.mesh is not None:  # placed like the rows they key
                ids = jax.device_put(ids, shd.batch_sharding(self.mesh, 2))
        cache, logits, rows_mask = self._prefill(state, tokens_in, mask_in, g)
        out = self._decode(
            state,
            cache,
            logits,
            rows_mask,
            active,
            params.device(),
            eos_arr,
            stop_arr,
            np.int32(n),
            key,
            ids,
            np.int32(self.pad_id),
        )
        del out["cache"]
        if self._multiprocess:  # this process's rows
            host = {k: shd.global_to_host(v) for k, v in out.items()}
        else:
            host = jax.device_get(out)
        return self._finish(host, tokens[:b], mask[:b], b * g, n, params)

    def _finish(
        self,
        host: dict[str, np.ndarray],
        prompt_ids: np.ndarray,
        prompt_mask: np.ndarray,
        rows: int,
        n: int,
        params: SamplingParams,
    ) -> SampleOutput:
        """Drops padding rows/columns, applies stop strings and decodes texts."""
        tok = np.array(host["tokens"][:rows, :n])
        mask = np.array(host["mask"][:rows, :n])
        lp_p = np.array(host["logp_policy"][:rows, :n])
        lp_s = np.array(host["logp_sampling"][:rows, :n])
        lengths = mask.sum(-1).astype(np.int32)
        reasons = [dec.FINISH_NAMES[int(c)] for c in host["finish"][:rows]]
        texts = None if self.tokenizer is None else []
        decoder = self.tokenizer
        known = getattr(decoder, "vocab_size", None)  # None: a stand-in without one
        if known is not None and self.cfg.vocab_size > known:
            unknown = int(((tok >= known) & mask).sum())
            if unknown:
                decoder = _SkipUnknownIds(decoder)
                if not self._warned_unknown_ids:
                    self._warned_unknown_ids = True
                    log.warning(
                        "sampled %d ids past the tokenizer's %d (the model embeds %d): they "
                        "decode to no text (said once per sampler)",
                        unknown,
                        known,
                        self.cfg.vocab_size,
                    )
        for r in range(rows):
            cut = None
            if params.stop_strings:
                cut = stops.stop_cut(tok[r, : lengths[r]], decoder, params.stop_strings)
            if cut is not None:
                k, text = cut
                tok[r, k:], mask[r, k:], lp_p[r, k:], lp_s[r, k:] = self.pad_id, False, 0, 0
                lengths[r], reasons[r] = k, "stop"
            elif texts is not None:
                text = decoder.decode(tok[r, : lengths[r]].tolist())
            if texts is not None:
                texts.append(text)
        g = rows // len(prompt_ids)
        return SampleOutput(
            prompt_ids=prompt_ids,
            prompt_mask=prompt_mask,
            tokens=tok,
            completion_mask=mask,
            logp_policy=lp_p,
            logp_sampling=lp_s,
            lengths=lengths,
            finish_reason=reasons,
            prompt_index=np.repeat(np.arange(len(prompt_ids), dtype=np.int32), g),
            texts=texts,
        )
