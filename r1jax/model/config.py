"""Model configuration: one frozen dataclass for every supported decoder family, plus presets.

Families covered by one code path:
- Qwen2 / Qwen2.5: q/k/v projection bias, tied or untied embeddings.
- Qwen3: RMSNorm on q and k per head, explicit ``head_dim``.
- Llama 3.x: rope scaling of type "llama3".
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

    family: str = "qwen2"  # "qwen2" | "qwen3" | "llama"
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
        if self.family not in ("qwen2", "qwen3", "llama"):
            errors.append(f"model.family={self.family!r} is not one of qwen2, qwen3, llama")
        for name in ("dtype", "param_dtype"):
            if getattr(self, name) not in DTYPES:
                errors.append(f"model.{name}={getattr(self, name)!r} is not one of {DTYPES}")
        if self.remat not in REMAT_POLICIES:
            errors.append(f"model.remat={self.remat!r} is not one of {REMAT_POLICIES}")
        if self.attention not in ATTENTION_IMPLS:
            errors.append(f"model.attention={self.attention!r} is not one of {ATTENTION_IMPLS}")
        elif self.attention == "cudnn" and self.dtype == "float32":
            errors.append("model.attention='cudnn' needs model.dtype bfloat16 or float16")
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
        per_layer = attn + mlp + 2 * d
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
    # Tiny sizes for tests and CPU smoke runs.
    "tiny": ModelConfig(),
    "tiny-qwen3": ModelConfig(family="qwen3", qk_norm=True, head_dim=32),
    "tiny-llama": ModelConfig(
        family="llama",
        rope_scaling=RopeScaling(factor=4.0, original_max_position_embeddings=64),
        tie_word_embeddings=False,
    ),
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
