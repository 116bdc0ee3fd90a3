"""Tokenizers behind one small interface.

Three implementations share the `Tokenizer` base class:

* `HFTokenizer`: a Hugging Face `tokenizer.json` run by the `tokenizers` library, with the
  special tokens, chat template and extra end-of-sequence ids that `transformers` reads from
  `tokenizer_config.json`, `chat_template.jinja`, `generation_config.json` and `config.json`.
* `SentencePieceTokenizer`: a sentencepiece `.model` file (Llama 1/2, Gemma, T5 style).
* `CharTokenizer`: one id per character plus a few special tokens, for smoke configs and the
  CPU demos; it saves to and loads from a small json file.

Prompts never get an end-of-sequence token appended: `encode` adds at most a BOS token.
Batches are LEFT padded so that the last prompt token of every row sits at the same position.
"""

from __future__ import annotations

import abc
import dataclasses
import hashlib
import json
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from r1jax import storage

CHAR_FORMAT = "r1jax_char_tokenizer"


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


class HFTokenizer(Tokenizer):
    """A Hugging Face `tokenizer.json` run by the `tokenizers` library.

    With `specials.add_bos` None, BOS follows the file's post-processor, as in `transformers`
    (Llama 3 adds one, Qwen has none).
    """

    def __init__(
        self, tokenizer: Any, specials: SpecialTokens | None = None, name: str = "<HFTokenizer>"
    ):
        self._tok, self.name = tokenizer, name
        self._vocab_size = max(tokenizer.get_vocab(with_added_tokens=True).values()) + 1
        st = specials or SpecialTokens()
        if st.add_bos is None and st.bos_token is not None:
            bos = tokenizer.token_to_id(st.bos_token)
            added = tokenizer.encode("", add_special_tokens=True).ids[:1] == [bos]
            st = dataclasses.replace(st, add_bos=added)
        self._set_specials(st)

    @property
    def vocab_size(self) -> int:
        """Number of ids (largest id + 1), added tokens included."""
        return self._vocab_size

    def token_to_id(self, token: str) -> int | None:
        """Id of a vocabulary or added token, or None."""
        return self._tok.token_to_id(token)

    def _encode_text(self, text: str) -> list[int]:
        try:
            return list(self._tok.encode(text, add_special_tokens=False).ids)
        except Exception as e:  # noqa: BLE001 - `tokenizers` raises plain Exception
            # e.g. a WordLevel vocabulary without [UNK] (an exported char tokenizer) meeting
            # a character it lacks: name that character, as CharTokenizer does
            where = next((f"character {ch!r} at position {j} of {text[:40]!r}"
                          for j, ch in enumerate(text) if not self._encodes(ch)),
                         repr(text[:40]))  # fmt: skip
            raise ValueError(f"{self.name}: cannot encode {where}: {e}") from None

    def _encodes(self, text: str) -> bool:
        try:
            self._tok.encode(text, add_special_tokens=False)
        except Exception:  # noqa: BLE001
            return False
        return True

    def _decode(self, ids: list[int], skip_special_tokens: bool) -> str:
        return self._tok.decode(ids, skip_special_tokens=skip_special_tokens)


class SentencePieceTokenizer(Tokenizer):
    """A sentencepiece `.model`; unset special tokens default to the model's own control ids.

    Control-token strings in a text (e.g. `<bos>` in a rendered Gemma chat) become their ids;
    the text between them is encoded by sentencepiece segment by segment. BOS is added by
    default when the model has one (unless `specials.add_bos` is False).
    """

    def __init__(self, model_file: str | Path, specials: SpecialTokens | None = None):
        import sentencepiece as spm

        self.name = str(model_file)
        try:
            self._sp = sp = spm.SentencePieceProcessor(model_file=str(model_file))
        except (OSError, RuntimeError) as e:
            raise ValueError(f"{model_file}: not a readable sentencepiece model ({e})") from e
        controls = [sp.id_to_piece(i) for i in range(sp.get_piece_size()) if sp.is_control(i)]
        self._control_re = _special_regex(controls)
        st = specials or SpecialTokens()
        own = {"bos_token": sp.bos_id(), "eos_token": sp.eos_id()}
        own |= {"pad_token": sp.pad_id(), "unk_token": sp.unk_id()}
        fill = {k: sp.id_to_piece(i) for k, i in own.items() if getattr(st, k) is None and i >= 0}
        st = dataclasses.replace(st, **fill)
        add_bos = st.bos_token is not None if st.add_bos is None else st.add_bos
        self._set_specials(dataclasses.replace(st, add_bos=add_bos))

    @property
    def vocab_size(self) -> int:
        """Number of sentencepiece pieces."""
        return self._sp.get_piece_size()

    def token_to_id(self, token: str) -> int | None:
        """Id of a piece, or None (sentencepiece maps unknown pieces to unk; we do not)."""
        tid = self._sp.piece_to_id(token)
        return tid if self._sp.id_to_piece(tid) == token else None

    def _encode_text(self, text: str) -> list[int]:
        ids = []
        for start, stop, special in _segments(text, self._control_re):
            piece = text[start:stop]
            ids += [self._sp.piece_to_id(piece)] if special else self._sp.encode(piece)
        return ids

    def _decode(self, ids: list[int], skip_special_tokens: bool) -> str:
        if skip_special_tokens:
            return self._sp.decode(ids)
        parts, run = [], []  # control pieces decode to "" in sentencepiece: render them here
        for i in ids:
            if self._sp.is_control(i):
                parts += [self._sp.decode(run), self._sp.id_to_piece(i)]
                run = []
            else:
                run.append(i)
        return "".join([*parts, self._sp.decode(run)])


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


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: cannot read json ({e})") from e
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a json object, got {type(data).__name__}")
    return data


def _token_str(value: Any, field: str, where: Path) -> str | None:
    """A special token given as a string or as an AddedToken dict `{"content": ...}`."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, dict) and isinstance(value.get("content"), str):
        return value["content"]
    raise ValueError(f"{where}: field {field!r} must be a string or {{'content': str}}: {value!r}")


def read_hf_specials(folder: str | Path) -> SpecialTokens:
    """Special tokens, extra eos ids, `add_bos_token` and chat template from the HF side files
    of `folder` (`tokenizer_config.json`, `chat_template.jinja`, `generation_config.json`,
    `config.json`); missing files leave fields unset."""
    folder = Path(folder)
    cfgs = {
        n: _read_json(folder / n)
        for n in ("tokenizer_config.json", "generation_config.json", "config.json")
        if (folder / n).is_file()
    }
    tok_cfg = cfgs.get("tokenizer_config.json", {})
    where = folder / "tokenizer_config.json"
    keys = ("bos_token", "eos_token", "pad_token", "unk_token")
    tokens = {key: _token_str(tok_cfg.get(key), key, where) for key in keys}
    extra: list[int] = []
    for name in ("generation_config.json", "config.json"):
        value = cfgs.get(name, {}).get("eos_token_id")
        values = value if isinstance(value, list) else [] if value is None else [value]
        if not all(isinstance(v, int) for v in values):
            raise ValueError(f"{folder / name}: eos_token_id must be int or list of int: {value!r}")
        extra += values
    template = tok_cfg.get("chat_template")
    if isinstance(template, list):  # [{"name": ..., "template": ...}, ...]
        template = {t.get("name"): t.get("template") for t in template}.get("default")
    if (folder / "chat_template.jinja").is_file():  # wins over the config, as in transformers
        template = (folder / "chat_template.jinja").read_text(encoding="utf-8")
    add_bos = tok_cfg.get("add_bos_token")
    return SpecialTokens(
        **tokens, extra_eos_ids=tuple(extra), add_bos=add_bos, chat_template=template
    )


def _load_json(file: Path) -> Tokenizer:
    data = _read_json(file)
    if data.get("format") == CHAR_FORMAT:
        keys = ("bos_token", "eos_token", "pad_token", "add_bos", "chat_template")
        try:
            kwargs = {k: data[k] for k in keys}
            return CharTokenizer(data["chars"], data["specials"], name=str(file), **kwargs)
        except KeyError as e:
            raise ValueError(f"{file}: char tokenizer json misses field {e}") from e
    if "model" not in data:
        raise ValueError(f"{file}: neither an HF tokenizer.json (no 'model') nor a {CHAR_FORMAT}")
    from tokenizers import Tokenizer as RustTokenizer

    try:
        tok = RustTokenizer.from_file(str(file))
    except Exception as e:  # the Rust side raises a bare Exception on bad files
        raise ValueError(f"{file}: not a valid Hugging Face tokenizer.json ({e})") from e
    # transformers ignores add_bos_token when tokenizer.json exists: BOS is the post-processor's
    st = dataclasses.replace(read_hf_specials(file.parent), add_bos=None)
    return HFTokenizer(tok, st, name=str(file))


TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "merges.txt",
    "tokenizer.model",
    "chat_template.jinja",
    "generation_config.json",
)
"""A HF directory's tokenizer and generation files (what ``r1jax export`` copies)."""


def load_tokenizer(path: str | Path) -> Tokenizer:
    """Load a tokenizer from a directory or a file.

    A directory is searched for `tokenizer.json` (HF or r1jax char format), then
    `tokenizer.model` (sentencepiece). A file is read by its kind (`.json` / `.model`). The
    side files of `read_hf_specials` are read from the directory that holds the tokenizer file.
    A remote path (`gs://...`) is read from a local copy of those files
    (`r1jax.storage.local_copy`).
    """
    if storage.is_remote(path):
        remote = storage.path(path)
        if remote.is_dir():
            path = storage.local_copy(str(path), (*TOKENIZER_FILES, "config.json"))
        else:
            names = (*TOKENIZER_FILES, "config.json", remote.name)
            path = Path(storage.local_copy(str(remote.parent), names)) / remote.name
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"tokenizer path {path} does not exist")
    if path.is_dir():
        for candidate in ("tokenizer.json", "tokenizer.model"):
            if (path / candidate).is_file():
                return load_tokenizer(path / candidate)
        present = sorted(p.name for p in path.iterdir())[:10]
        raise FileNotFoundError(
            f"tokenizer directory {path} has neither tokenizer.json nor tokenizer.model "
            f"(found: {present})"
        )
    if path.suffix == ".json":
        return _load_json(path)
    if path.suffix == ".model":
        return SentencePieceTokenizer(path, read_hf_specials(path.parent))
    raise ValueError(f"{path}: unknown tokenizer file type (expected .json or .model)")
