"""Prompt templates: R1-Zero text, chat-template parity with transformers, format_prompt."""

import datetime

import jinja2
import pytest
import transformers
from tokenizers import Tokenizer as RustTokenizer
from tokenizers import models, pre_tokenizers

from r1jax.config import ConfigError
from r1jax.prompts import (
    MATH_BOXED_SUFFIX,
    TagConfig,
    format_prompt,
    r1_zero_prompt,
    render_chat,
)
from r1jax.tokenizer import CharTokenizer

# Qwen2.5-like: whitespace-controlled tags, default system prompt, tools via tojson, tool calls,
# grouped tool responses (loop.index0 look-behind/ahead), a namespace, reasoning content.
QWEN_LIKE = """
{%- set ns = namespace(last_user=-1) %}
{%- for m in messages %}{% if m.role == 'user' %}{% set ns.last_user = loop.index0 %}{% endif %}
{%- endfor %}
{%- if tools %}
    {{- '<|im_start|>system\\n' }}
    {%- if messages[0].role == 'system' %}{{- messages[0].content }}
    {%- else %}{{- 'You are a helpful assistant.' }}{%- endif %}
    {{- '\\n\\n# Tools\\n<tools>' }}
    {%- for tool in tools %}{{- '\\n' }}{{- tool | tojson }}{%- endfor %}
    {{- '\\n</tools><|im_end|>\\n' }}
{%- elif messages[0].role == 'system' %}
    {{- '<|im_start|>system\\n' + messages[0].content + '<|im_end|>\\n' }}
{%- else %}
    {{- '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}
{%- endif %}
{%- for message in messages %}
    {%- if message.role == 'system' and loop.first %}{% continue %}{% endif %}
    {%- if message.role in ['user', 'system'] %}
        {{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' }}
    {%- elif message.role == 'assistant' %}
        {{- '<|im_start|>assistant' }}
        {%- if message.reasoning_content is defined and loop.index0 > ns.last_user %}
            {{- '\\n<think>\\n' + message.reasoning_content + '\\n</think>\\n' }}
        {%- endif %}
        {%- if message.content %}{{- '\\n' + message.content }}{%- endif %}
        {%- for call in message.tool_calls | default([]) %}
            {{- '\\n<tool_call>\\n{"name": "' + call.name + '", "arguments": ' }}
            {{- call.arguments | tojson }}{{- '}\\n</tool_call>' }}
        {%- endfor %}
        {{- '<|im_end|>\\n' }}
    {%- elif message.role == 'tool' %}
        {%- if loop.index0 == 0 or messages[loop.index0 - 1].role != 'tool' %}
            {{- '<|im_start|>user' }}
        {%- endif %}
        {{- '\\n<tool_response>\\n' + message.content + '\\n</tool_response>' }}
        {%- if loop.last or messages[loop.index0 + 1].role != 'tool' %}
            {{- '<|im_end|>\\n' }}
        {%- endif %}
    {%- else %}
        {{- raise_exception('Unknown role: ' + message.role) }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\\n' }}
    {%- if enable_thinking is defined and not enable_thinking %}{{- '<think>\\n\\n</think>\\n\\n' }}
    {%- endif %}
{%- endif %}
"""

# Llama-like, written WITHOUT whitespace control: relies on trim_blocks + lstrip_blocks.
LLAMA_LIKE = """{{ bos_token }}
{% for message in messages %}
    {% if message['role'] not in ['system', 'user', 'assistant'] %}
        {{ raise_exception('bad role ' + message['role']) }}
    {% endif %}
    {% if loop.index0 > 5 %}
        {% break %}
    {% endif %}
<|start_header_id|>{{ message['role'] }}<|end_header_id|>

{% generation %}
{{ message['content'] | trim }}<|eot_id|>
{% endgeneration %}
{% endfor %}
{% if add_generation_prompt %}
<|start_header_id|>assistant<|end_header_id|>

{% endif %}
Today: {{ strftime_now("%Y") }} {{ dict(a=1, b=[2, 'x']) | tojson }}{{ eos_token }}"""

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "calc",
            "description": "Evaluate <expr> & return «result» — 中文",
            "parameters": {"type": "object", "properties": {"expr": {"type": "string"}}},
        },
    }
]
CONVERSATIONS = [
    [{"role": "user", "content": "What is 2+3?"}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi 🤖 中文"}],
    [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Q1"},
        {
            "role": "assistant",
            "content": "A1",
            "reasoning_content": "thought 1",
            "tool_calls": None,
        },
        {"role": "user", "content": "  Q2 with spaces \n"},
        {"role": "assistant", "content": "A2", "thinking": "thought 2"},
    ],
    [
        {"role": "user", "content": "Compute 6*7"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [{"name": "calc", "arguments": {"expr": "6*7 <b>&"}}],
        },
        {"role": "tool", "content": "42"},
        {"role": "tool", "content": "done"},
        {"role": "user", "content": "thanks"},
    ],
]


def _hf_tokenizer(template: str) -> transformers.PreTrainedTokenizerFast:
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    rust = RustTokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    rust.pre_tokenizer = pre_tokenizers.Whitespace()
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=rust, bos_token="<s>", eos_token="</s>", chat_template=template
    )


@pytest.mark.parametrize("gen", [False, True])
@pytest.mark.parametrize("conv", range(len(CONVERSATIONS)))
def test_render_chat_qwen_like_matches_transformers(conv, gen):
    ref_tok = _hf_tokenizer(QWEN_LIKE)
    messages = CONVERSATIONS[conv]
    tools = TOOLS if conv == 3 else None
    ref = ref_tok.apply_chat_template(
        messages, tools=tools, tokenize=False, add_generation_prompt=gen
    )
    out = render_chat(QWEN_LIKE, messages, add_generation_prompt=gen, tools=tools)
    assert out == ref
    kwargs = {"enable_thinking": False}
    ref = ref_tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=gen, **kwargs)
    assert render_chat(QWEN_LIKE, messages, add_generation_prompt=gen, **kwargs) == ref


def test_render_chat_hand_checked_pieces():
    out = render_chat(QWEN_LIKE, CONVERSATIONS[3], add_generation_prompt=True, tools=TOOLS)
    assert '"description": "Evaluate <expr> & return «result» — 中文"' in out  # no HTML escapes
    assert '"arguments": {"expr": "6*7 <b>&"}}' in out
    assert "<tool_response>\n42\n</tool_response>\n<tool_response>\ndone" in out
    assert out.endswith("<|im_start|>user\nthanks<|im_end|>\n<|im_start|>assistant\n")
    out = render_chat(QWEN_LIKE, CONVERSATIONS[2])
    assert "thought 1" not in out  # only reasoning after the last user turn is shown
    assert "<|im_start|>assistant\n<think>\nthought 2\n</think>\n\nA2<|im_end|>\n" in out


@pytest.mark.parametrize("gen", [False, True])
def test_render_chat_trim_blocks_specials_and_globals(gen):
    ref_tok = _hf_tokenizer(LLAMA_LIKE)
    messages = CONVERSATIONS[2][:4] + [{"role": "user", "content": f"m{i}"} for i in range(4)]
    ref = ref_tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=gen)
    out = render_chat(LLAMA_LIKE, messages, gen, **ref_tok.special_tokens_map)
    assert out == ref
    year = datetime.datetime.now().strftime("%Y")
    # trim_blocks eats the newline after a block tag, not after `{{ bos_token }}`
    assert out.startswith(
        "<s>\n<|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>\n<"
    )
    assert out.endswith(f'Today: {year} {{"a": 1, "b": [2, "x"]}}</s>')
    assert out.count("<|eot_id|>") == 6  # loop broken after six messages


def test_render_chat_errors_and_sandbox():
    bad = [{"role": "robot", "content": "x"}]
    with pytest.raises(jinja2.exceptions.TemplateError, match="Unknown role: robot"):
        render_chat(QWEN_LIKE, bad)
    with pytest.raises(jinja2.exceptions.TemplateError, match="Unknown role: robot"):
        _hf_tokenizer(QWEN_LIKE).apply_chat_template(bad, tokenize=False)
    with pytest.raises(jinja2.exceptions.SecurityError):
        render_chat("{{ ''.__class__.__mro__ }}", CONVERSATIONS[0])
    with pytest.raises(jinja2.exceptions.SecurityError):
        render_chat("{% set ns = namespace(_x=1) %}", CONVERSATIONS[0])
    with pytest.raises(jinja2.exceptions.SecurityError):
        render_chat("{{ messages.append(1) }}", CONVERSATIONS[0])  # immutable sandbox
    with pytest.raises(ValueError, match="does not parse"):
        render_chat("{% for m in messages %}", CONVERSATIONS[0])
    with pytest.raises(ValueError, match="non-empty list"):
        render_chat(QWEN_LIKE, [])
    with pytest.raises(TypeError, match="chat message 1 must be a dict"):
        render_chat(QWEN_LIKE, [{"role": "user", "content": "a"}, "b"])


R1_ZERO_EXPECTED = (
    "A conversation between User and Assistant. The user asks a question, and the Assistant "
    "solves it. The assistant first thinks about the reasoning process in the mind and then "
    "provides the user with the answer. The reasoning process and answer are enclosed within "
    "<think> </think> and <answer> </answer> tags, respectively, i.e., <think> reasoning "
    "process here </think> <answer> answer here </answer>. User: What is {x}+3?. Assistant:"
)


def test_r1_zero_template_text_and_tags():
    assert r1_zero_prompt("What is {x}+3?") == R1_ZERO_EXPECTED
    tags = TagConfig(think=("<reasoning>", "</reasoning>"), answer=("[A]", "[/A]"))
    out = r1_zero_prompt("Q", tags=tags)
    assert "<think>" not in out and "<answer>" not in out
    assert out.count("<reasoning>") == 2 and out.count("[/A]") == 2
    assert r1_zero_prompt("Q", "{think_open}|{prompt}|{answer_close}") == "<think>|Q|</answer>"
    with pytest.raises(ValueError, match="no {prompt} placeholder"):
        r1_zero_prompt("Q", "no placeholder")
    with pytest.raises(ValueError, match="unknown placeholder 'oops'"):
        r1_zero_prompt("Q", "{prompt} {oops}")
    with pytest.raises(ValueError, match="TagConfig.answer"):
        TagConfig(answer=("<a>", ""))


def test_format_prompt_styles():
    record = {"prompt": "What is {x}+3?", "answer": "5"}
    assert format_prompt(record) == R1_ZERO_EXPECTED
    assert format_prompt(record, prefill=" <think>") == R1_ZERO_EXPECTED + " <think>"
    out = format_prompt(record, style="plain", suffix=MATH_BOXED_SUFFIX, system="SYS")
    assert out == "SYS\nWhat is {x}+3?\nPlease reason step by step, and put your final answer " + (
        "within \\boxed{}."
    )
    out = format_prompt(record, suffix="S")
    assert "User: What is {x}+3?\nS. Assistant:" in out
    tok = CharTokenizer("abc", chat_template=QWEN_LIKE)
    ref = _hf_tokenizer(QWEN_LIKE)
    msgs = [{"role": "system", "content": "SYS"}, {"role": "user", "content": record["prompt"]}]
    expected = ref.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    assert format_prompt(record, "chat", tok, system="SYS") == expected
    expected = ref.apply_chat_template(msgs[1:], tokenize=False, add_generation_prompt=True)
    assert format_prompt(record, "chat", tok, prefill="<think>\n") == expected + "<think>\n"
    assert format_prompt({"prompt": msgs}, "chat", tok) == format_prompt(
        record, "chat", tok, system="SYS"
    )
    kw = {"enable_thinking": False}
    assert format_prompt(record, "chat", tok, chat_kwargs=kw).endswith("<think>\n\n</think>\n\n")


def test_format_prompt_errors():
    with pytest.raises(ValueError, match=r"no 'prompt' field \(fields: \['question'\]\)"):
        format_prompt({"question": "q"})
    with pytest.raises(ValueError, match="style must be one of"):
        format_prompt({"prompt": "q"}, style="fancy")
    with pytest.raises(ValueError, match="needs a tokenizer with a chat_template"):
        format_prompt({"prompt": "q"}, style="chat", tokenizer=CharTokenizer("ab"))
    with pytest.raises(ValueError, match="must be a string for style 'r1_zero', got list"):
        format_prompt({"prompt": [{"role": "user", "content": "q"}]})
    # Gemma 2's template refuses a system message: one line naming the setting
    gemma2 = ("{{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ raise_exception("
              "'System role not supported') }}{% endif %}{% for m in messages %}"
              "{{ '<start_of_turn>' + m['role'] + '\n' + m['content'] }}{% endfor %}")  # fmt: skip
    tok = CharTokenizer("ab", chat_template=gemma2)
    assert format_prompt({"prompt": "q"}, "chat", tok).endswith("<start_of_turn>user\nq")
    with pytest.raises(ConfigError, match="System role not supported; prompt.system is set"):
        format_prompt({"prompt": "q"}, "chat", tok, system="S")


@pytest.mark.parametrize(
    ("prompt", "text", "expected"),
    [
        ("Q. Assistant: <think>", "<think>a</think>", "a</think>"),
        ("Q. Assistant: <think>\n", "<think>\na</think>", "a</think>"),
        ("Q. Assistant: <think>\n", " <think>a", "a"),
        ("Q. Assistant: <think>", "<think>\na", "\na"),  # the prompt has no newline: keep it
        ("Q. Assistant: <think>", "a</think>", "a</think>"),  # already a continuation
        ("Q. Assistant:", "<think>a</think>", "<think>a</think>"),  # the prompt opens nothing
        ("Q<think>x</think> Assistant:", " <think>a", " <think>a"),
        ("Q. Assistant: <think>", "<thinking>a", "<thinking>a"),
    ],
)
def test_continuation_drops_a_think_the_prompt_already_opened(prompt, text, expected):
    from r1jax.prompts import continuation

    assert continuation(prompt, text) == expected
