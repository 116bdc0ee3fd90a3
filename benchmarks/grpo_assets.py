"""Shared inputs of ``bench_grpo.py``: one HF directory (random Qwen2 + byte-level BPE
``tokenizer.json``) and one prompt set, read by both r1jax and TRL.
"""

from __future__ import annotations

import json
import os
import random

from benchmarks.tiny_qwen2 import save_random_qwen2

EOS, PAD = "<|endoftext|>", "<|pad|>"
WORD_TEXT = (
    "the a of to and in is it that for on was with as by at from this be are an or not but "
    "what which their if will all one two three four five six seven eight nine ten number sum "
    "add subtract multiply divide equal answer question think step reason check result total "
    "apple orange train river mountain city garden letter window yellow purple green seven "
    "eleven twelve twenty thirty forty fifty hundred thousand plus minus times each every "
    "between after before because therefore hence so then first second third last next"
)


def corpus(n_lines: int = 20000, seed: int = 0) -> list[str]:
    """Synthetic training text for the tokenizer: word salad with numbers and punctuation."""
    rng = random.Random(seed)
    words_list = WORD_TEXT.split()
    lines = []
    for _ in range(n_lines):
        words = [
            str(rng.randint(0, 999)) if rng.random() < 0.2 else rng.choice(words_list)
            for _ in range(rng.randint(5, 20))
        ]
        lines.append(" ".join(words).capitalize() + rng.choice([".", "?", "!", ":"]))
    return lines


def prompts(n: int = 256, seed: int = 1) -> list[str]:
    """``n`` short arithmetic prompts (about 12-24 BPE tokens each)."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        a, b = rng.randint(1, 999), rng.randint(1, 999)
        op = rng.choice(["plus", "minus", "times"])
        tail = rng.choice(["Think step by step.", "Check the result.", "Give the answer."])
        out.append(f"Question {i}: what is {a} {op} {b}? {tail}")
    return out


def build_tokenizer(path: str, vocab_size: int) -> int:
    """Trains a byte-level BPE with ``EOS``/``PAD`` and writes ``tokenizer.json`` and
    ``tokenizer_config.json`` into ``path``. Returns the vocabulary size."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS, PAD],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus(), trainer=trainer)
    if tok.get_vocab_size() != vocab_size:
        raise RuntimeError(
            f"BPE reached {tok.get_vocab_size()} tokens, not --vocab={vocab_size}; "
            "lower --vocab or enlarge the corpus"
        )
    tok.save(os.path.join(path, "tokenizer.json"))
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "eos_token": EOS,
        "pad_token": PAD,
        "model_max_length": 4096,
        "padding_side": "left",
        "add_bos_token": False,
    }
    with open(os.path.join(path, "tokenizer_config.json"), "w") as f:
        json.dump(config, f, indent=1)
    return tok.get_vocab_size()


def hf_tokenizer(path: str):
    """The ``transformers`` tokenizer of ``path`` that encodes exactly like ``tokenizer.json``.

    ``AutoTokenizer`` (transformers 5) picks ``Qwen2Tokenizer`` from ``config.json``'s
    model_type, which re-splits digits and so encodes this BPE differently from the
    ``tokenizers`` library (and from r1jax); ``PreTrainedTokenizerFast`` runs the file as is.
    """
    import transformers

    return transformers.PreTrainedTokenizerFast(
        tokenizer_file=os.path.join(path, "tokenizer.json"),
        eos_token=EOS,
        pad_token=PAD,
        padding_side="left",
    )


def build_assets(path: str, args) -> dict[str, object]:
    """Writes the tokenizer, a random fp32 Qwen2 (tied embeddings) and ``prompts.jsonl`` into
    ``path``; returns facts for the report (params, prompt token lengths)."""
    from tokenizers import Tokenizer

    os.makedirs(path, exist_ok=True)
    vocab = build_tokenizer(path, args.vocab)
    tok = Tokenizer.from_file(os.path.join(path, "tokenizer.json"))
    model = save_random_qwen2(
        args,
        path,
        vocab_size=vocab,
        eos_token_id=tok.token_to_id(EOS),
        pad_token_id=tok.token_to_id(PAD),
        bos_token_id=None,
    )
    texts = prompts(args.num_prompts)
    lengths = [len(tok.encode(t).ids) for t in texts]
    hf_tok = hf_tokenizer(path)
    for t in texts:
        if hf_tok(t)["input_ids"] != tok.encode(t).ids:
            raise RuntimeError(f"transformers and tokenizers encode {t!r} differently")
    if max(lengths) > args.max_prompt_len:
        raise RuntimeError(f"a prompt has {max(lengths)} tokens > --max_prompt_len")
    with open(os.path.join(path, "prompts.jsonl"), "w") as f:
        for t in texts:
            f.write(json.dumps({"prompt": t, "answer": "e"}) + "\n")
    return {
        "vocab": vocab,
        "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
        "prompt_tokens_min": min(lengths),
        "prompt_tokens_max": max(lengths),
        "prompt_tokens_mean": sum(lengths) / len(lengths),
    }
