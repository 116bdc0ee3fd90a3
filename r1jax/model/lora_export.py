"""LoRA adapters as a PEFT adapter directory (``r1jax export --adapters``):
``adapter_config.json`` + ``adapter_model.safetensors``, which PEFT (``PeftModel.
from_pretrained``) and vLLM's LoRA serving load on top of the base model.

PEFT adds ``lora_B.weight @ lora_A.weight * lora_alpha / r`` to a ``[out, in]`` weight. Ours
add ``A @ B * alpha / r`` to ``W [K1..Kc, N1..Nm]``, which HF stores as ``[N, K]`` (the
flattened transpose), so ``lora_A.weight = A`` flattened to ``[K, r]``, transposed: ``[r, K]``,
and ``lora_B.weight = B`` flattened to ``[r, N]``, transposed: ``[N, r]``.
"""

from __future__ import annotations

import json
import os
import tempfile

import jax
import numpy as np

from r1jax import sharding as shd
from r1jax import storage
from r1jax.model.lora import adapter_of, targets_of
from r1jax.model.safetensors_io import save_file

HF_MODULES = {
    "q": "self_attn.q_proj",
    "k": "self_attn.k_proj",
    "v": "self_attn.v_proj",
    "o": "self_attn.o_proj",
    "gate": "mlp.gate_proj",
    "up": "mlp.up_proj",
    "down": "mlp.down_proj",
}
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")


def peft_tensors(model, dtype: str = "float32") -> tuple[list[tuple[str, np.ndarray]], dict]:
    """``(tensors, config)``: the adapters of ``model`` under PEFT's names, gathered to the
    host (a collective with several processes: every process calls it), and the
    ``adapter_config.json`` fields. Raises ``ValueError`` for a model without adapters."""
    tensors, targets, rank, scale = [], [], None, None
    np_dtype = np.dtype(jax.numpy.dtype(dtype))
    for i, block in enumerate(model.layers):
        for module, name in targets_of(block):
            adapter = adapter_of(module, name)
            if adapter is None:
                continue
            a, b, scale = (shd.gather_to_host(v[...]) for v in adapter)
            rank, scale = a.shape[-1], float(scale)
            if name not in targets:
                targets.append(name)
            prefix = f"base_model.model.model.layers.{i}.{HF_MODULES[name]}"
            tensors.append((f"{prefix}.lora_A.weight", a.reshape(-1, rank).T.astype(np_dtype)))
            tensors.append((f"{prefix}.lora_B.weight", b.reshape(rank, -1).T.astype(np_dtype)))
    if not tensors:
        raise ValueError("the model has no LoRA adapters to export (lora.rank is 0)")
    config = {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "r": rank,
        "lora_alpha": scale * rank,
        "lora_dropout": 0.0,
        "bias": "none",
        "target_modules": [HF_MODULES[t].split(".")[1] for t in targets],
        "fan_in_fan_out": False,
        "inference_mode": True,
    }
    return tensors, config


def save_peft_adapters(model, path: str, base_model: str = "", dtype: str = "float32") -> None:
    """Writes the adapters of ``model`` to ``path`` as a PEFT adapter directory
    (``base_model``: recorded as ``base_model_name_or_path``). Every process calls it (the
    adapters are gathered from all); process 0 writes, via a local folder for ``gs://``."""
    tensors, config = peft_tensors(model, dtype)
    if jax.process_index() != 0:
        return
    config["base_model_name_or_path"] = base_model or None

    def write(folder: str) -> None:
        os.makedirs(folder, exist_ok=True)
        save_file(tensors, os.path.join(folder, ADAPTER_FILES[1]))
        with open(os.path.join(folder, ADAPTER_FILES[0]), "w") as f:
            json.dump(config, f, indent=2)

    if not storage.is_remote(path):
        write(path)
        return
    with tempfile.TemporaryDirectory(prefix="r1jax-adapters-") as local:
        write(local)
        storage.upload_dir(local, path)
