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

The interface and its helpers are in :mod:`r1jax.tokenizer_base`, `CharTokenizer` in
:mod:`r1jax.tokenizer_char`; this module holds the two file-backed tokenizers, the HF side
files and `load_tokenizer`, and re-exports the public names of the other two.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from r1jax import storage
from r1jax.tokenizer_base import (  # noqa: F401 - the public names of r1jax.tokenizer
    SpecialTokens,
    Tokenizer,
    _segments,
    _special_regex,
)
from r1jax.tokenizer_char import CHAR_FORMAT, CharTokenizer


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
