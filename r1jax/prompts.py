"""Prompt construction: the R1-Zero template, answer-tag conventions and chat templates.

`render_chat` renders Hugging Face chat templates (jinja2) in the same sandboxed environment
that `transformers.apply_chat_template` uses, so a rendered prompt matches it character for
character: `trim_blocks`, `lstrip_blocks`, the loop-controls extension, a `tojson` filter that
does not escape HTML, `raise_exception`, `strftime_now`, and `{% generation %}` blocks.
`format_prompt` turns a dataset record into the text the model sees.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

import jinja2
import jinja2.ext
import jinja2.nodes
import jinja2.utils
from jinja2.sandbox import ImmutableSandboxedEnvironment

if TYPE_CHECKING:
    from r1jax.tokenizer import Tokenizer

R1_ZERO_TEMPLATE = (
    "A conversation between User and Assistant. The user asks a question, and the Assistant "
    "solves it. The assistant first thinks about the reasoning process in the mind and then "
    "provides the user with the answer. The reasoning process and answer are enclosed within "
    "{think_open} {think_close} and {answer_open} {answer_close} tags, respectively, i.e., "
    "{think_open} reasoning process here {think_close} {answer_open} answer here {answer_close}. "
    "User: {prompt}. Assistant:"
)
"""R1-Zero prompt (DeepSeek-R1 paper, table 1). Placeholders: `{prompt}` and the four tags;
literal braces in a custom template must be doubled (`{{`, `}}`), as in `str.format`."""

MATH_BOXED_SUFFIX = "Please reason step by step, and put your final answer within \\boxed{}."
"""The instruction DeepSeek recommends appending to math questions."""

STYLES = ("r1_zero", "chat", "plain")


@dataclasses.dataclass(frozen=True)
class TagConfig:
    """Opening and closing tags of the reasoning and the answer parts of a completion."""

    think: tuple[str, str] = ("<think>", "</think>")
    answer: tuple[str, str] = ("<answer>", "</answer>")

    def __post_init__(self) -> None:
        for field in ("think", "answer"):
            pair = getattr(self, field)
            if len(pair) != 2 or not all(isinstance(t, str) and t for t in pair):
                raise ValueError(f"TagConfig.{field} must be two non-empty strings, got {pair!r}")

    def fields(self) -> dict[str, str]:
        """The tag placeholders of `R1_ZERO_TEMPLATE`: think_open, ..., answer_close."""
        return {
            "think_open": self.think[0],
            "think_close": self.think[1],
            "answer_open": self.answer[0],
            "answer_close": self.answer[1],
        }


def r1_zero_prompt(
    prompt: str, template: str = R1_ZERO_TEMPLATE, tags: TagConfig | None = None
) -> str:
    """Fill `template` with the question `prompt` and the tag strings of `tags`."""
    if "{prompt}" not in template:
        raise ValueError("R1-Zero template has no {prompt} placeholder")
    try:
        return template.format(prompt=prompt, **(tags or TagConfig()).fields())
    except (KeyError, IndexError) as e:
        raise ValueError(f"R1-Zero template has an unknown placeholder {e}") from e


# ---------------------------------------------------------------- chat templates (jinja2)


class _GenerationBlock(jinja2.ext.Extension):
    """Accept `{% generation %}` ... `{% endgeneration %}` (assistant-mask markers)."""

    tags = {"generation"}

    def parse(self, parser: Any) -> jinja2.nodes.Node:
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        call = self.call_method("_render_body")
        return jinja2.nodes.CallBlock(call, [], [], body).set_lineno(lineno)

    def _render_body(self, caller: Any) -> str:
        return caller()


class _Namespace(jinja2.utils.Namespace):
    """`namespace()` that refuses underscore attributes (no path to CPython internals)."""

    def __init__(*args: Any, **kwargs: Any) -> None:
        self, rest = args[0], args[1:]
        attrs = dict(*rest, **kwargs)
        for name in attrs:
            _Namespace._check(name)
        jinja2.utils.Namespace.__init__(self, attrs)

    def __setitem__(self, name: str, value: Any) -> None:
        _Namespace._check(name)
        jinja2.utils.Namespace.__setitem__(self, name, value)

    @staticmethod
    def _check(name: Any) -> None:
        if isinstance(name, str) and name.startswith("_"):
            raise jinja2.exceptions.SecurityError(f"namespace attribute {name!r} is not allowed")


class _DictFactory:
    """`dict(...)` and `dict.fromkeys(...)` without exposing the `dict` type itself."""

    def __call__(self, *args: Any, **kwargs: Any) -> dict:
        return dict(*args, **kwargs)

    def fromkeys(self, *args: Any, **kwargs: Any) -> dict:
        return dict.fromkeys(*args, **kwargs)


def _raise_exception(message: str) -> None:
    raise jinja2.exceptions.TemplateError(message)


def _tojson(
    x: Any,
    ensure_ascii: bool = False,
    indent: int | None = None,
    separators: tuple[str, str] | None = None,
    sort_keys: bool = False,
) -> str:
    return json.dumps(
        x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys
    )


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


@functools.cache
def _environment() -> ImmutableSandboxedEnvironment:
    env = ImmutableSandboxedEnvironment(
        trim_blocks=True,
        lstrip_blocks=True,
        extensions=[_GenerationBlock, jinja2.ext.loopcontrols],
    )
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    env.globals["dict"] = _DictFactory()
    env.globals["namespace"] = _Namespace
    return env


@functools.lru_cache(maxsize=64)
def _compile(template: str) -> jinja2.Template:
    try:
        return _environment().from_string(template)
    except jinja2.exceptions.TemplateSyntaxError as e:
        raise ValueError(f"chat template does not parse: {e.message} (line {e.lineno})") from e


_REASONING_KEYS = ("reasoning_content", "thinking", "reasoning")


def _normalise_message(i: int, message: Any) -> dict[str, Any]:
    """Drop None-valued keys and copy the reasoning under its usual names (transformers does)."""
    if not isinstance(message, Mapping):
        raise TypeError(f"chat message {i} must be a dict, got {type(message).__name__}")
    out = {k: v for k, v in message.items() if v is not None}
    reasoning = next((out[k] for k in _REASONING_KEYS if out.get(k) is not None), None)
    if reasoning is not None:
        out = {"thinking": reasoning, **out, "reasoning_content": reasoning}
    return out


def render_chat(
    template: str,
    messages: Sequence[Mapping[str, Any]],
    add_generation_prompt: bool = False,
    tools: list[dict] | None = None,
    documents: list[dict] | None = None,
    **kwargs: Any,
) -> str:
    """Render a jinja2 chat template exactly as `transformers.apply_chat_template(tokenize=False)`.

    `kwargs` become template variables: pass the tokenizer's special tokens here
    (`**tokenizer.special_tokens_map`: bos_token, eos_token, ...) and extras such as
    `enable_thinking=False`.
    """
    if not isinstance(template, str) or not template:
        raise ValueError("render_chat: template must be a non-empty string")
    if isinstance(messages, (str, Mapping)) or not len(messages):
        raise ValueError("render_chat: messages must be a non-empty list of dicts")
    chat = [_normalise_message(i, m) for i, m in enumerate(messages)]
    return _compile(template).render(
        messages=chat,
        tools=tools,
        documents=documents,
        add_generation_prompt=add_generation_prompt,
        **kwargs,
    )


# ---------------------------------------------------------------- dataset record -> text


def format_prompt(
    record: Mapping[str, Any],
    style: str = "r1_zero",
    tokenizer: Tokenizer | None = None,
    system: str | None = None,
    *,
    template: str = R1_ZERO_TEMPLATE,
    tags: TagConfig | None = None,
    suffix: str | None = None,
    prefill: str = "",
    prompt_key: str = "prompt",
    chat_kwargs: Mapping[str, Any] | None = None,
) -> str:
    """Turn a dataset record into the model's input text.

    Styles: `"r1_zero"` fills `template` (default `R1_ZERO_TEMPLATE`); `"chat"` renders the
    tokenizer's chat template with an optional `system` message, a user message and the
    generation prompt (a record whose prompt is already a list of messages is rendered as is);
    `"plain"` uses the prompt text unchanged. `suffix` (e.g. `MATH_BOXED_SUFFIX`) is appended to
    the question after a newline; `system` is prepended as a line for the non-chat styles;
    `prefill` is appended to the result (e.g. `"<think>\\n"` to start the reasoning).
    The chat text may already begin with the BOS token: then encode it with `add_bos=False`.
    """
    if style not in STYLES:
        raise ValueError(f"prompt style must be one of {STYLES}, got {style!r}")
    if prompt_key not in record:
        raise ValueError(f"record has no {prompt_key!r} field (fields: {sorted(record)})")
    prompt = record[prompt_key]
    if isinstance(prompt, str):
        question = prompt if not suffix else f"{prompt}\n{suffix}"
    elif style == "chat" and isinstance(prompt, Sequence):
        question = None
    else:
        raise ValueError(
            f"record field {prompt_key!r} must be a string for style {style!r}, "
            f"got {type(prompt).__name__}"
        )
    if style == "chat":
        if tokenizer is None or not tokenizer.chat_template:
            raise ValueError("prompt style 'chat' needs a tokenizer with a chat_template")
        if question is None:
            messages = list(prompt)
        else:
            messages = [{"role": "system", "content": system}] if system is not None else []
            messages.append({"role": "user", "content": question})
        kwargs = {**tokenizer.special_tokens_map, **(chat_kwargs or {})}
        try:
            text = render_chat(
                tokenizer.chat_template, messages, add_generation_prompt=True, **kwargs
            )
        except jinja2.exceptions.TemplateError as e:  # the template's own raise_exception
            from r1jax.config import ConfigError

            hint = ""
            if system is not None:
                hint = ("; prompt.system is set: this template may take no system message "
                        "(Gemma 2's does not), leave it empty")  # fmt: skip
            raise ConfigError(
                f"config.prompt.style='chat': the tokenizer's chat template refused the "
                f"prompt: {e}{hint}"
            ) from None
    else:
        text = r1_zero_prompt(question, template, tags) if style == "r1_zero" else question
        if system is not None:
            text = f"{system}\n{text}"
    return text + prefill


def continuation(prompt: str, text: str) -> str:
    """``text`` (an SFT completion, a preference pair's response) as the model writes it
    after ``prompt``: without its leading ``<think>`` when the prompt already ends with one
    (``prompt.prefill``, or a chat template that opens the reasoning, as R1-Distill's does),
    so the model does not learn to open the reasoning twice; whitespace after that tag is
    dropped too when the prompt ends with whitespace. Other texts are returned as they are."""
    from r1jax.rewards.extract import THINK, opens_think

    if not opens_think(prompt):
        return text
    body = text.lstrip()
    if not body.startswith(THINK):
        return text
    rest = body[len(THINK) :]
    return rest.lstrip() if prompt[-1:].isspace() else rest


def opened_think(text: str) -> str:
    """``text`` opening with exactly one ``<think>``: the whole assistant turn of a
    completion sampled after a prompt that ends with ``<think>`` (what a chat-layout reward
    model reads, :mod:`r1jax.rm_scoring`)."""
    from r1jax.rewards.extract import THINK

    return THINK + continuation(THINK, text)
