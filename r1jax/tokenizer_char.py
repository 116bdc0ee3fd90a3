"""`CharTokenizer`: one id per character plus a few special tokens, for smoke configs and the
CPU demos. It saves to and loads from a small json file (`CHAR_FORMAT`, read back by
:func:`r1jax.tokenizer.load_tokenizer`) and exports itself as a Hugging Face
`tokenizer.json` + `tokenizer_config.json`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from r1jax import storage
from r1jax.tokenizer_base import SpecialTokens, Tokenizer, _segments, _special_regex

CHAR_FORMAT = "r1jax_char_tokenizer"


class CharTokenizer(Tokenizer):
    """One id per character; ids 0..S-1 are `specials`, then `chars` in order.

    Special-token strings inside a text are encoded as their special id (as in HF tokenizers);
    any other character outside `chars` raises.
    """

    def __init__(
        self,
        chars: str,
        specials: Sequence[str] = ("<pad>", "<bos>", "<eos>"),
        *,
        bos_token: str | None = "<bos>",
        eos_token: str | None = "<eos>",
        pad_token: str | None = "<pad>",
        add_bos: bool = True,
        chat_template: str | None = None,
        name: str = "<CharTokenizer>",
    ):
        self.name, self.chars, self.specials = name, str(chars), tuple(specials)
        if not self.chars:
            raise ValueError(f"{name}: chars is empty")
        for label, items in (("chars", self.chars), ("specials", self.specials)):
            dup = [x for x in dict.fromkeys(items) if list(items).count(x) > 1]
            if dup:
                raise ValueError(f"{name}: duplicate {label} {dup}")
        for s in self.specials:
            if not isinstance(s, str) or not s or (len(s) == 1 and s in self.chars):
                raise ValueError(f"{name}: special {s!r} is empty or also one of the chars")
        self._vocab = {s: i for i, s in enumerate((*self.specials, *self.chars))}
        self._inv = list(self._vocab)
        self._special_re = _special_regex(self.specials)
        st = SpecialTokens(bos_token, eos_token, pad_token, None, (), add_bos, chat_template)
        self._set_specials(st)

    @property
    def vocab_size(self) -> int:
        """len(specials) + len(chars)."""
        return len(self._vocab)

    def token_to_id(self, token: str) -> int | None:
        """Id of a special token or a single character, or None."""
        return self._vocab.get(token)

    def _encode_text(self, text: str) -> list[int]:
        ids = []
        for start, stop, special in _segments(text, self._special_re):
            if special:
                ids.append(self._vocab[text[start:stop]])
                continue
            for j in range(start, stop):
                if text[j] not in self._vocab:
                    raise ValueError(
                        f"{self.name}: character {text[j]!r} at position {j} of {text[:40]!r} "
                        f"is not in the vocabulary {self.chars!r}"
                    )
                ids.append(self._vocab[text[j]])
        return ids

    def _decode(self, ids: list[int], skip_special_tokens: bool) -> str:
        n = len(self.specials) if skip_special_tokens else 0
        return "".join(self._inv[i] for i in ids if i >= n)

    def to_dict(self) -> dict[str, Any]:
        """The json-serialisable description that `load_tokenizer` reads back."""
        return {
            "format": CHAR_FORMAT,
            "chars": self.chars,
            "specials": list(self.specials),
            **{k: self._tokens[k] for k in ("bos_token", "eos_token", "pad_token")},
            "add_bos": self._add_bos,
            "chat_template": self.chat_template,
        }

    def save(self, path: str | Path) -> str:
        """Write the tokenizer as json to `path` (a directory gets `tokenizer.json`; local or
        remote); returns the file's path."""
        target = str(path)
        if storage.isdir(target):
            target = f"{target.rstrip('/')}/tokenizer.json"
        storage.write_text(target, json.dumps(self.to_dict(), ensure_ascii=False, indent=1))
        return target

    def hf_tokenizer_json(self) -> str:
        """The vocabulary as a Hugging Face ``tokenizer.json``: a WordLevel model over single
        characters (every character its own pre-token), the specials as special added tokens
        with their ids, BOS prepended by the post-processor when ``add_bos``, and a decoder
        that joins the characters. ``tokenizers`` and ``transformers`` encode and decode
        with it as this tokenizer does (an unknown character raises there too)."""
        from tokenizers import AddedToken, Regex, decoders, models, pre_tokenizers, processors
        from tokenizers import Tokenizer as RustTokenizer

        tok = RustTokenizer(models.WordLevel(self._vocab))
        tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
        tok.decoder = decoders.Fuse()
        specials = [AddedToken(s, special=True, normalized=False) for s in self.specials]
        tok.add_special_tokens(specials)
        if self._add_bos:
            bos = self._tokens["bos_token"]
            tok.post_processor = processors.TemplateProcessing(
                single=f"{bos} $A", pair=f"{bos} $A $B:1", special_tokens=[(bos, self.bos_id)]
            )
        return tok.to_str(pretty=True)

    def save_hf(self, folder: str | Path) -> list[str]:
        """Write the tokenizer into the directory ``folder`` (local or remote) as Hugging Face
        files: ``tokenizer.json`` (:meth:`hf_tokenizer_json`) and ``tokenizer_config.json``
        (special tokens, ``add_bos_token``, chat template). ``transformers.AutoTokenizer`` and
        :func:`load_tokenizer` read them back with the same ids. Returns the names written."""
        tok_cfg = {
            "tokenizer_class": "PreTrainedTokenizerFast",
            **{k: v for k, v in self._tokens.items() if v is not None},
            "add_bos_token": self._add_bos,
            "clean_up_tokenization_spaces": False,
        }
        if self.chat_template:
            tok_cfg["chat_template"] = self.chat_template
        folder = str(folder).rstrip("/")
        storage.makedirs(folder)
        files = {
            "tokenizer.json": self.hf_tokenizer_json(),
            "tokenizer_config.json": json.dumps(tok_cfg, ensure_ascii=False, indent=2),
        }
        for name, text in files.items():
            storage.write_text(f"{folder}/{name}", text)
        return list(files)
