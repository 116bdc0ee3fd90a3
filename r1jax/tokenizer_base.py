"""The tokenizer interface every backend shares, and its helpers.

`Tokenizer` is the base class: ids are Python ints, batches are `np.int32` arrays, `encode`
adds at most a BOS token (never an EOS), and `batch_encode` LEFT pads to `ids [B, T]` and
`mask [B, T]`. `SpecialTokens` carries the special token strings and defaults a backend
resolves to ids; `_special_regex` and `_segments` split a text at special-token strings.
The backends live in :mod:`r1jax.tokenizer` (`HFTokenizer`, `SentencePieceTokenizer`) and
:mod:`r1jax.tokenizer_char` (`CharTokenizer`).
"""

from __future__ import annotations

import abc
import dataclasses
import hashlib
import re
from collections.abc import Iterator, Sequence

import numpy as np


@dataclasses.dataclass(frozen=True)
class SpecialTokens:
    """Special token strings (None: absent) and defaults, as `tokenizer_config.json` gives them.

    `extra_eos_ids` are further ids that end a generation (`generation_config.json`);
    `add_bos` None lets the tokenizer decide.
    """

    bos_token: str | None = None
    eos_token: str | None = None
    pad_token: str | None = None
    unk_token: str | None = None
    extra_eos_ids: tuple[int, ...] = ()
    add_bos: bool | None = None
    chat_template: str | None = None


_FINGERPRINT_TEXTS = (*map(chr, range(32, 127)), "\n", " the", "Hello world", "12 + 7 = 19",
                      "<think>", "</think>", "<answer>", "\u00c4", "\u6570")  # fmt: skip


class Tokenizer(abc.ABC):
    """Common interface: ids are Python ints, batches are `np.int32` arrays.

    Subclasses implement `_encode_text`, `_decode`, `token_to_id`, `vocab_size` and call
    `_set_specials` once in `__init__`.
    """

    name: str = "<tokenizer>"

    def _set_specials(self, st: SpecialTokens) -> None:
        """Resolve special token strings to ids; raise naming the token when it is unknown."""
        self._tokens = {"bos_token": st.bos_token, "eos_token": st.eos_token}
        self._tokens |= {"pad_token": st.pad_token, "unk_token": st.unk_token}
        self._ids: dict[str, int | None] = {}
        for key, token in self._tokens.items():
            tid = None if token is None else self.token_to_id(token)
            if token is not None and tid is None:
                raise ValueError(f"{self.name}: {key} {token!r} is not in the vocabulary")
            self._ids[key] = tid
        eos = [self._ids["eos_token"]] if self._ids["eos_token"] is not None else []
        self._eos_ids = self._check_ids(list(dict.fromkeys(eos + list(st.extra_eos_ids))))
        self._add_bos = bool(st.add_bos) and self._ids["bos_token"] is not None
        self.chat_template = st.chat_template

    def _check_ids(self, ids: Sequence[int] | np.ndarray) -> list[int]:
        """`ids` as a list of Python ints; raise on an id outside the vocabulary."""
        out = [int(i) for i in np.asarray(ids, dtype=np.int64).ravel()]
        for i in out:
            if not 0 <= i < self.vocab_size:
                raise ValueError(f"{self.name}: id {i} outside vocabulary [0, {self.vocab_size})")
        return out

    @property
    @abc.abstractmethod
    def vocab_size(self) -> int:
        """Number of ids (largest id + 1), special tokens included."""

    @abc.abstractmethod
    def token_to_id(self, token: str) -> int | None:
        """Id of a token string (a vocabulary piece), or None when it is not in the vocabulary."""

    @abc.abstractmethod
    def _encode_text(self, text: str) -> list[int]:
        """Ids of `text` without any BOS/EOS added."""

    @abc.abstractmethod
    def _decode(self, ids: list[int], skip_special_tokens: bool) -> str:
        """Text of valid ids."""

    def decode(self, ids: Sequence[int] | np.ndarray, skip_special_tokens: bool = True) -> str:
        """Text of an id sequence `[T]`; special tokens are dropped when `skip_special_tokens`."""
        return self._decode(self._check_ids(ids), skip_special_tokens)

    @property
    def bos_id(self) -> int | None:
        """Id of the beginning-of-sequence token, or None (e.g. Qwen has no BOS)."""
        return self._ids["bos_token"]

    @property
    def eos_id(self) -> int:
        """The primary end-of-sequence id: `eos_token`, else the first of `eos_ids`."""
        if not self._eos_ids:
            raise ValueError(f"{self.name}: no eos token defined (set eos_token)")
        return self._eos_ids[0]

    @property
    def eos_ids(self) -> list[int]:
        """All ids that end a generation (eos_token plus generation_config/config eos ids)."""
        return list(self._eos_ids)

    @property
    def pad_id(self) -> int:
        """Padding id: the pad token when there is one, otherwise `eos_id`."""
        pad = self._ids["pad_token"]
        return pad if pad is not None else self.eos_id

    @property
    def add_bos_default(self) -> bool:
        """Whether `encode` prepends BOS when `add_bos` is None."""
        return self._add_bos

    @property
    def special_tokens_map(self) -> dict[str, str]:
        """The named special tokens that are set, e.g. `{"eos_token": "<|im_end|>"}`.

        These are passed to chat templates as variables, as `transformers` does.
        """
        return {k: v for k, v in self._tokens.items() if v is not None}

    def fingerprint(self) -> str:
        """A short hash of how this tokenizer maps text to ids (each printable ASCII character
        and a few words and tags, the special ids, the vocabulary size): another vocabulary,
        or the same characters in another order, gives another (a checkpoint's weights mean
        nothing under it)."""
        h = hashlib.sha256(repr((self.vocab_size, self._ids, self._eos_ids)).encode())
        for text in _FINGERPRINT_TEXTS:
            try:
                ids: list[int] | None = self._encode_text(text)
            except Exception:  # noqa: BLE001 - a text this vocabulary cannot encode
                ids = None
            h.update(repr(ids).encode())
        return h.hexdigest()[:16]

    def encode(self, text: str, add_bos: bool | None = None) -> list[int]:
        """Token ids `[T]` of `text`; prepends BOS if `add_bos`.

        Special-token strings that appear in `text` become their special ids. `add_bos=None`
        follows `add_bos_default`, except for a text that already starts with the BOS token
        (a chat template's `{{ bos_token }}`), which keeps that one BOS.
        """
        if not isinstance(text, str):
            raise TypeError(f"{self.name}: encode expects str, got {type(text).__name__}")
        ids = self._encode_text(text)
        if add_bos is None:
            add = self._add_bos and not (ids and ids[0] == self.bos_id)
        else:
            add = add_bos
        if add:
            if self.bos_id is None:
                raise ValueError(f"{self.name}: add_bos=True but the tokenizer has no bos token")
            ids = [self.bos_id, *ids]
        return ids

    def batch_encode(
        self,
        texts: Sequence[str],
        max_len: int | None = None,
        pad_to_multiple: int | None = None,
        add_bos: bool | None = None,
        truncate: str | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Encode and LEFT pad a batch: returns `ids [B, T]` int32 and `mask [B, T]` bool.

        T is the longest row, rounded up to `pad_to_multiple`, and capped at `max_len` (so
        `pad_to_multiple == max_len` gives a fixed T). A row longer than `max_len` raises,
        unless `truncate="left"`, which keeps its last tokens (and its BOS, when one was added).
        Padding positions hold `pad_id` and `mask == False`.
        """
        if isinstance(texts, str) or not len(texts):
            raise ValueError(f"{self.name}: batch_encode needs a non-empty list of strings")
        if truncate not in (None, "left") or (max_len or 1) < 1 or (pad_to_multiple or 1) < 1:
            raise ValueError(
                f"bad batch_encode arguments: truncate={truncate!r} (None or 'left'), "
                f"max_len={max_len}, pad_to_multiple={pad_to_multiple} (>= 1)"
            )
        rows = [self.encode(t, add_bos=add_bos) for t in texts]
        keep_bos = int(self._add_bos if add_bos is None else add_bos)
        for i, row in enumerate(rows):
            if max_len is not None and len(row) > max_len:
                if truncate != "left":
                    raise ValueError(
                        f"{self.name}: text {i} ({texts[i][:40]!r}...) has {len(row)} tokens > "
                        f"max_len={max_len}; pass truncate='left' to keep its last tokens"
                    )
                head = row[: min(keep_bos, max_len - 1)]
                rows[i] = head + row[len(row) - max_len + len(head) :]
        length = max(1, *(len(r) for r in rows))
        if pad_to_multiple:
            length = -(-length // pad_to_multiple) * pad_to_multiple
        length = min(length, max_len or length)
        ids = np.full((len(rows), length), self.pad_id, dtype=np.int32)
        mask = np.zeros((len(rows), length), dtype=bool)
        for i, row in enumerate(rows):
            ids[i, length - len(row) :], mask[i, length - len(row) :] = row, True
        return ids, mask

    def batch_decode(
        self,
        ids: np.ndarray | Sequence[Sequence[int]],
        mask: np.ndarray | None = None,
        skip_special_tokens: bool = True,
    ) -> list[str]:
        """Decode rows of `ids [B, T]`; with `mask [B, T]` only positions where it is True."""
        out = []
        for b, row in enumerate(ids):
            row = np.asarray(row).reshape(-1)
            if mask is not None:
                row = row[np.asarray(mask[b], dtype=bool)]
            out.append(self.decode(row, skip_special_tokens=skip_special_tokens))
        return out


def _special_regex(tokens: Sequence[str]) -> re.Pattern | None:
    """A regex matching any of `tokens`, longest first (None when there are none)."""
    by_len = sorted(tokens, key=len, reverse=True)
    return re.compile("|".join(map(re.escape, by_len))) if by_len else None


def _segments(text: str, regex: re.Pattern | None) -> Iterator[tuple[int, int, bool]]:
    """Non-empty `(start, stop, is_special)` spans of `text` split at matches of `regex`."""
    pos = 0
    for m in regex.finditer(text) if regex else ():
        if m.start() > pos:
            yield pos, m.start(), False
        yield m.start(), m.end(), True
        pos = m.end()
    if pos < len(text):
        yield pos, len(text), False
