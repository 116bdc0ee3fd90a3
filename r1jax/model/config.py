"""Model configuration: one frozen dataclass for every supported decoder family, plus presets.

Families covered by one code path:
- Qwen2 / Qwen2.5: q/k/v projection bias, tied or untied embeddings.
- Qwen3: RMSNorm on q and k per head, explicit ``head_dim``.
- Llama 3.x: rope scaling of type "llama3".
- Gemma: RMSNorm weights applied as ``1 + w``, embeddings scaled by ``sqrt(hidden_size)``,
  GeGLU MLP (tanh GELU), tied embeddings.
- Gemma 2: Gemma plus norms on the attention and MLP outputs ("sandwich"), attention scaled
  by ``query_pre_attn_scalar**-0.5``, tanh soft-capped attention scores and final logits,
  sliding-window attention on every other layer.
- Gemma 3 (text): Gemma 2 without soft-capping, with q/k norms, five sliding-window layers per
  global one, and its own rotary base (``rope_local_theta``) for the sliding layers.
"""

from __future__ import annotations

import dataclasses
from typing import Any

DTYPES = ("float32", "bfloat16", "float16")
REMAT_POLICIES = ("none", "full", "dots", "dots_no_batch")
# einsum: r1jax's own attention; cudnn: cuDNN flash attention (NVIDIA GPUs) for every pass
# with more than one query (training, prefill; decode stays einsum); xla: JAX's reference
# lowering of the same call (tests the cudnn path's plumbing on CPU); splash: the Pallas
# splash (flash) attention kernel on TPUs, same passes (Pallas interpret mode on CPU).
ATTENTION_IMPLS = ("einsum", "cudnn", "xla", "splash")
FAMILIES = ("qwen2", "qwen3", "llama", "gemma", "gemma2", "gemma3")
MLP_ACTIVATIONS = ("silu", "gelu_tanh")  # SwiGLU (Qwen, Llama) / GeGLU (Gemma)
LAYER_TYPES = ("full", "sliding")


@dataclasses.dataclass(frozen=True)
class RopeScaling:
    """Llama-3 style frequency-dependent rope scaling (HF ``rope_type: "llama3"``)."""

    factor: float = 8.0
    low_freq_factor: float = 1.0
    high_freq_factor: float = 4.0
    original_max_position_embeddings: int = 8192


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Hyperparameters of a decoder-only transformer.

    ``dtype`` is the compute dtype of activations and matmuls; ``param_dtype`` is the storage
    dtype of the weights ("float32" to train: r1jax's training commands refuse 16-bit weights and
    float16 compute, :func:`r1jax.optim.check_training_dtypes`; any for sampling and eval).
    """

    family: str = "qwen2"  # one of FAMILIES
    vocab_size: int = 256
    hidden_size: int = 64
    num_layers: int = 2
    num_heads: int = 4
    num_kv_heads: int = 2
    head_dim: int = 16
    intermediate_size: int = 128
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    rope_scaling: RopeScaling | None = None
    qkv_bias: bool = False
    qk_norm: bool = False
    tie_word_embeddings: bool = True
    max_position_embeddings: int = 2048
    dtype: str = "float32"
    param_dtype: str = "float32"
    remat: str = "none"
    attention: str = "einsum"
    bos_token_id: int | None = None
    eos_token_id: int | list[int] | None = None
    # 0: a language model (``lm_head``); n > 0: a sequence classifier / reward model with a
    # ``score [D, n]`` head read at each row's last real token (HF ``*ForSequenceClassification``)
    num_labels: int = 0
    # Gemma families (defaults: Qwen / Llama behaviour)
    norm_offset: float = 0.0  # RMSNorm scales by (norm_offset + w): 1.0 in Gemma
    embed_scale: bool = False  # embeddings times sqrt(hidden_size) (Gemma)
    mlp_activation: str = "silu"  # one of MLP_ACTIVATIONS
    sandwich_norms: bool = False  # RMSNorm on the attention and MLP outputs too (Gemma 2, 3)
    query_pre_attn_scalar: float | None = None  # scores * this**-0.5 (None: head_dim)
    attn_softcap: float | None = None  # scores -> cap * tanh(scores / cap) (Gemma 2)
    final_softcap: float | None = None  # the same on the output logits (Gemma 2)
    sliding_window: int | None = None  # a "sliding" layer's query sees the last N keys
    layer_types: tuple[str, ...] | None = None  # per layer "full" | "sliding" (None: all full)
    rope_local_theta: float | None = None  # rotary base of the sliding layers (None: rope_theta)
    rope_linear_factor: float = 1.0  # full layers' positions / factor (HF rope_type "linear")

    def is_sliding(self, layer: int) -> bool:
        """True when layer ``layer`` attends within ``sliding_window`` only."""
        return self.layer_types is not None and self.layer_types[layer] == "sliding"

    def __post_init__(self) -> None:
        errors = []
        for name in (
            "vocab_size",
            "hidden_size",
            "num_layers",
            "num_heads",
            "num_kv_heads",
            "head_dim",
            "intermediate_size",
            "max_position_embeddings",
        ):
            if getattr(self, name) <= 0:
                errors.append(f"model.{name} must be positive, got {getattr(self, name)}")
        if self.num_kv_heads > 0 and self.num_heads % self.num_kv_heads:
            errors.append(
                f"model.num_heads={self.num_heads} is not a multiple of "
                f"model.num_kv_heads={self.num_kv_heads}"
            )
        if (
            isinstance(self.num_labels, bool)
            or not isinstance(self.num_labels, int)
            or (self.num_labels < 0)
        ):
            errors.append(f"model.num_labels={self.num_labels!r} must be an int >= 0")
        if self.head_dim % 2:
            errors.append(f"model.head_dim={self.head_dim} must be even for rotary embeddings")
        if self.family not in FAMILIES:
            errors.append(f"model.family={self.family!r} is not one of {FAMILIES}")
        if self.mlp_activation not in MLP_ACTIVATIONS:
            errors.append(
                f"model.mlp_activation={self.mlp_activation!r} is not one of {MLP_ACTIVATIONS}"
            )
        if self.layer_types is not None:
            if isinstance(self.layer_types, list):  # (from JSON)
                object.__setattr__(self, "layer_types", tuple(self.layer_types))
            if len(self.layer_types) != self.num_layers or not set(self.layer_types) <= set(
                LAYER_TYPES
            ):
                errors.append(
                    f"model.layer_types={self.layer_types!r} must name one of {LAYER_TYPES} "
                    f"for each of the {self.num_layers} layers"
                )
            elif "sliding" in self.layer_types and not (self.sliding_window or 0) > 0:
                errors.append(
                    f"model.sliding_window={self.sliding_window!r} must be a positive int for "
                    "the sliding layers of model.layer_types"
                )
        for name in ("attn_softcap", "final_softcap", "query_pre_attn_scalar"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                errors.append(f"model.{name}={value!r} must be > 0 (or None)")
        if not self.rope_linear_factor > 0:
            errors.append(f"model.rope_linear_factor={self.rope_linear_factor!r} must be > 0")
        for name in ("dtype", "param_dtype"):
            if getattr(self, name) not in DTYPES:
                errors.append(f"model.{name}={getattr(self, name)!r} is not one of {DTYPES}")
        if self.remat not in REMAT_POLICIES:
            errors.append(f"model.remat={self.remat!r} is not one of {REMAT_POLICIES}")
        if self.attention not in ATTENTION_IMPLS:
            errors.append(f"model.attention={self.attention!r} is not one of {ATTENTION_IMPLS}")
        elif self.attention == "cudnn" and self.dtype == "float32":
            errors.append("model.attention='cudnn' needs model.dtype bfloat16 or float16")
        if self.attention in ("cudnn", "xla") and self.attn_softcap is not None:
            errors.append(
                f"model.attention={self.attention!r} cannot soft-cap attention scores "
                f"(model.attn_softcap={self.attn_softcap}, Gemma 2): use 'einsum' (or 'splash' "
                "on TPUs)"
            )
        if errors:
            raise ValueError("; ".join(errors))

    @property
    def num_params(self) -> int:
        """Number of parameters (embeddings counted once when tied; a classifier has no
        ``lm_head``)."""
        d, h, kv, hd = self.hidden_size, self.num_heads, self.num_kv_heads, self.head_dim
        attn = d * h * hd * 2 + d * kv * hd * 2
        if self.qkv_bias:
            attn += h * hd + 2 * kv * hd
        if self.qk_norm:
            attn += 2 * hd
        mlp = 3 * d * self.intermediate_size
        per_layer = attn + mlp + (4 if self.sandwich_norms else 2) * d
        if self.num_labels:
            head = d * self.num_labels
        else:
            head = 0 if self.tie_word_embeddings else self.vocab_size * d
        return self.num_layers * per_layer + self.vocab_size * d + head + d

    def replace(self, **changes: Any) -> ModelConfig:
        """Returns a copy with ``changes`` applied (validated again)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelConfig:
        d = dict(d)
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown model config fields {unknown}; known: {sorted(names)}")
        if isinstance(d.get("rope_scaling"), dict):
            d["rope_scaling"] = RopeScaling(**d["rope_scaling"])
        if isinstance(d.get("eos_token_id"), tuple):
            d["eos_token_id"] = list(d["eos_token_id"])
        return cls(**d)


def _qwen25(hidden, layers, heads, kv, inter, vocab=151936, tied=True) -> ModelConfig:
    return ModelConfig(
        family="qwen2",
        vocab_size=vocab,
        hidden_size=hidden,
        num_layers=layers,
        num_heads=heads,
        num_kv_heads=kv,
        head_dim=hidden // heads,
        intermediate_size=inter,
        rms_norm_eps=1e-6,
        rope_theta=1e6,
        qkv_bias=True,
        tie_word_embeddings=tied,
        max_position_embeddings=32768,
        bos_token_id=151643,
        eos_token_id=151643,
    )


def _qwen3(hidden, layers, heads, kv, inter, tied=True) -> ModelConfig:
    return ModelConfig(
        family="qwen3",
        vocab_size=151936,
        hidden_size=hidden,
        num_layers=layers,
        num_heads=heads,
        num_kv_heads=kv,
        head_dim=128,
        intermediate_size=inter,
        rms_norm_eps=1e-6,
        rope_theta=1e6,
        qk_norm=True,
        tie_word_embeddings=tied,
        max_position_embeddings=40960,
        bos_token_id=151643,
        eos_token_id=151645,
    )


def _llama3(hidden, layers, heads, kv, inter, head_dim, factor, tied) -> ModelConfig:
    return ModelConfig(
        family="llama",
        vocab_size=128256,
        hidden_size=hidden,
        num_layers=layers,
        num_heads=heads,
        num_kv_heads=kv,
        head_dim=head_dim,
        intermediate_size=inter,
        rms_norm_eps=1e-5,
        rope_theta=500000.0,
        rope_scaling=RopeScaling(factor=factor),
        tie_word_embeddings=tied,
        max_position_embeddings=131072,
        bos_token_id=128000,
        eos_token_id=[128001, 128008, 128009],
    )


def gemma_layer_types(num_layers: int, every: int) -> tuple[str, ...]:
    """Sliding-window layers with every ``every``-th one global (HF's
    ``sliding_window_pattern``): Gemma 2 ``every=2``, Gemma 3 ``every=6``."""
    return tuple("full" if (i + 1) % every == 0 else "sliding" for i in range(num_layers))


def _gemma2(hidden, layers, heads, kv, inter, scalar=256.0) -> ModelConfig:
    return ModelConfig(
        family="gemma2", vocab_size=256000, hidden_size=hidden, num_layers=layers,
        num_heads=heads, num_kv_heads=kv, head_dim=256, intermediate_size=inter,
        rms_norm_eps=1e-6, rope_theta=10000.0, tie_word_embeddings=True,
        max_position_embeddings=8192, bos_token_id=2, eos_token_id=[1, 107], norm_offset=1.0,
        embed_scale=True, mlp_activation="gelu_tanh", sandwich_norms=True,
        query_pre_attn_scalar=scalar, attn_softcap=50.0, final_softcap=30.0,
        sliding_window=4096, layer_types=gemma_layer_types(layers, 2),
    )  # fmt: skip


def _gemma3(hidden, layers, heads, kv, inter, window, vocab=262144, factor=1.0) -> ModelConfig:
    return ModelConfig(
        family="gemma3", vocab_size=vocab, hidden_size=hidden, num_layers=layers,
        num_heads=heads, num_kv_heads=kv, head_dim=256, intermediate_size=inter,
        rms_norm_eps=1e-6, rope_theta=1e6, rope_local_theta=10000.0, rope_linear_factor=factor,
        qk_norm=True, tie_word_embeddings=True, max_position_embeddings=32768 if factor == 1
        else 131072, bos_token_id=2, eos_token_id=[1, 106], norm_offset=1.0, embed_scale=True,
        mlp_activation="gelu_tanh", sandwich_norms=True, query_pre_attn_scalar=256.0,
        sliding_window=window, layer_types=gemma_layer_types(layers, 6),
    )  # fmt: skip


PRESETS: dict[str, ModelConfig] = {
    "qwen2.5-0.5b": _qwen25(896, 24, 14, 2, 4864),
    "qwen2.5-1.5b": _qwen25(1536, 28, 12, 2, 8960),
    "qwen2.5-7b": _qwen25(3584, 28, 28, 4, 18944, vocab=152064, tied=False),
    "qwen2.5-32b": _qwen25(5120, 64, 40, 8, 27648, vocab=152064, tied=False),
    "qwen3-0.6b": _qwen3(1024, 28, 16, 8, 3072),
    "qwen3-1.7b": _qwen3(2048, 28, 16, 8, 6144),
    "qwen3-4b": _qwen3(2560, 36, 32, 8, 9728),
    "qwen3-8b": _qwen3(4096, 36, 32, 8, 12288, tied=False),
    "llama3.2-1b": _llama3(2048, 16, 32, 8, 8192, 64, 32.0, True),
    "llama3.2-3b": _llama3(3072, 28, 24, 8, 8192, 128, 32.0, True),
    "llama3.1-8b": _llama3(4096, 32, 32, 8, 14336, 128, 8.0, False),
    "gemma-2-2b": _gemma2(2304, 26, 8, 4, 9216),
    "gemma-2-9b": _gemma2(3584, 42, 16, 8, 14336),
    "gemma-3-1b": _gemma3(1152, 26, 4, 1, 6912, 512),
    "gemma-3-4b": _gemma3(2560, 34, 8, 4, 10240, 1024, vocab=262208, factor=8.0),
    # Tiny sizes for tests and CPU smoke runs.
    "tiny": ModelConfig(),
    "tiny-qwen3": ModelConfig(family="qwen3", qk_norm=True, head_dim=32),
    "tiny-llama": ModelConfig(
        family="llama",
        rope_scaling=RopeScaling(factor=4.0, original_max_position_embeddings=64),
        tie_word_embeddings=False,
    ),
    # Gemma 2 / 3 at tiny size: a window of 4 keys so that short test sequences slide
    "tiny-gemma2": _gemma2(64, 2, 4, 2, 128).replace(
        vocab_size=256,
        head_dim=16,
        query_pre_attn_scalar=24.0,
        sliding_window=4,
        max_position_embeddings=2048,
        eos_token_id=None,
        bos_token_id=None,
    ),  # fmt: skip
    "tiny-gemma3": _gemma3(64, 3, 4, 2, 128, 4).replace(
        vocab_size=256,
        head_dim=16,
        layer_types=("sliding", "full", "sliding"),
        rope_linear_factor=2.0,
        max_position_embeddings=2048,
        eos_token_id=None,
        bos_token_id=None,
    ),  # fmt: skip
    "small": ModelConfig(
        vocab_size=512,
        hidden_size=128,
        num_layers=2,
        num_heads=4,
        num_kv_heads=2,
        head_dim=32,
        intermediate_size=384,
    ),
}


def get_preset(name: str, **overrides: Any) -> ModelConfig:
    """Returns the preset ``name`` with ``overrides`` applied; error lists valid names."""
    key = name.lower()
    if key not in PRESETS:
        raise ValueError(f"model.preset={name!r} is unknown; choose one of {sorted(PRESETS)}")
    return PRESETS[key].replace(**overrides) if overrides else PRESETS[key]
