"""Language consistency (DeepSeek-R1): share of chain-of-thought words in the target language.

Words are classified by script: each CJK ideograph or kana character counts as one word;
runs of other letters form one word each and take the script of their first letter.
Digits, punctuation, symbols and markup tags (``<think>``, ``</answer>``, or a garbled
``</thinswer>``) are not words. The check is script-level: ``en`` (and the
other Latin-script languages) accepts any Latin-script word.
"""

from __future__ import annotations

import re
from typing import Any

from r1jax.rewards.extract import think_block
from r1jax.rewards.registry import register_reward

_HAN = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002fa1f"
_KANA = "\u3040-\u30ff\u31f0-\u31ff"
_WORD_RE = re.compile(
    rf"(?P<han>[{_HAN}])|(?P<kana>[{_KANA}])|(?P<word>(?:(?![{_HAN}{_KANA}])[^\W\d_])+)"
)
_TAG_RE = re.compile(r"</?[A-Za-z_][\w-]*>")
_SCRIPTS = (
    ("latin", re.compile(r"[A-Za-z\u00c0-\u024f\u1e00-\u1eff]")),
    ("cyrillic", re.compile(r"[\u0400-\u052f]")),
    ("hangul", re.compile(r"[\uac00-\ud7af\u1100-\u11ff\u3130-\u318f]")),
    ("greek", re.compile(r"[\u0370-\u03ff]")),
    ("arabic", re.compile(r"[\u0600-\u06ff]")),
)
LATIN_LANGUAGES = ("en", "fr", "de", "es", "it", "pt", "nl", "vi", "id")
LANGUAGE_SCRIPTS: dict[str, frozenset[str]] = {
    **{lang: frozenset({"latin"}) for lang in LATIN_LANGUAGES},
    "zh": frozenset({"han"}),
    "ja": frozenset({"han", "kana"}),
    "ko": frozenset({"hangul"}),
    "ru": frozenset({"cyrillic"}),
    "el": frozenset({"greek"}),
    "ar": frozenset({"arabic"}),
}


def word_scripts(text: str) -> list[str]:
    """Script of every word of ``text`` (``han``, ``kana``, ``latin``, ..., ``other``); tags
    such as ``<answer>`` are not words."""
    scripts = []
    for m in _WORD_RE.finditer(_TAG_RE.sub(" ", text)):
        if m.group("han"):
            scripts.append("han")
        elif m.group("kana"):
            scripts.append("kana")
        else:
            first = m.group("word")[0]
            scripts.append(next((name for name, r in _SCRIPTS if r.match(first)), "other"))
    return scripts


@register_reward("language_consistency", value_range=(0.0, 1.0))
def language_consistency(completion: str, row: dict[str, Any], language: str = "en") -> float:
    """Fraction of words of the ``<think>`` part that are in the row's target language:
    ``row["language"]`` where the data has that field, else ``language`` (the run's default,
    e.g. ``("language_consistency", 0.1, {"language": "zh"})``).

    Without think tags the whole completion is used. A reasoning part without words (only
    digits and symbols, or empty) scores 1: none of it is in another language (whether the
    reasoning is there at all is for a format reward to judge). Supported languages:
    ``LANGUAGE_SCRIPTS`` keys. Range [0, 1].
    """
    language = row.get("language") or language
    if language not in LANGUAGE_SCRIPTS:
        raise ValueError(
            f"language {language!r} is not supported; use one of {sorted(LANGUAGE_SCRIPTS)}"
        )
    cot = think_block(completion)
    scripts = word_scripts(completion if cot is None else cot)
    if not scripts:
        return 1.0
    wanted = LANGUAGE_SCRIPTS[language]
    return sum(s in wanted for s in scripts) / len(scripts)
