#!/usr/bin/env python3
"""Builds the chat-template fixtures under tests/data/chat/ with transformers' own Jinja path.

- templates/llama3_style.jinja and templates/features.jinja: two templates written for tpkit (their
  text is in this file). llama3_style has the features of the Llama 3.1 Instruct template (header
  tokens, a system block with a date_string default, tools as tojson(indent=4), one JSON tool call
  per turn, ipython results that may be mappings or lists, raise_exception). features is no model's
  format: it renders a conversation while touching most of Jinja (loops and loop variables,
  break/continue, for-else, macros, block set, namespace, tuple unpacking, most filters and tests,
  string and dict methods).
- golden_chat.jsonl: conversations from seeded generators, weighted to the hard cases (system or
  not, alternation violations that raise, empty content, whitespace, CJK/emoji/combining marks,
  special tokens typed into content, <think> blocks and reasoning_content, tools with nested
  schemas, tool calls with dict or string arguments, tool results, add_generation_prompt, the
  enable_thinking kwarg), rendered by PreTrainedTokenizerFast.apply_chat_template(tokenize=False,
  chat_template=...) on AutoTokenizer.from_pretrained(<shared dir>). The records have the fields of
  ../shared/models/tokenizers/golden_chat_public.jsonl; `template` is "shared:<dir>/<file>" (a
  tokenizer_config.json means its chat_template) or "data:templates/<file>"; `variables` is
  {**tokenizer.special_tokens_map, **kwargs}, which is what apply_chat_template passes besides
  messages, tools, documents (None) and add_generation_prompt; `ids` is
  tokenizers.Tokenizer.encode(rendered, add_special_tokens=False). When the template calls
  raise_exception, `rendered` and `ids` are null and `error` is the message. Cases in which jinja2
  fails in any other way (TypeError, UndefinedError, ...) are generated again.
- snippets.jsonl: small templates, each with a JSON context, rendered by the environment that
  transformers' _compile_jinja_template builds (sandbox, trim_blocks, lstrip_blocks, loopcontrols,
  its tojson and raise_exception); `error` is "<ExceptionClassName>: <message>" when jinja2 raises
  (at parse or render time).

- engine_chat.jsonl: what `tpkit-generate --chat` must send to the model: for a tokenizer, a
  prompt, an optional system message and template kwargs, the ids of
  apply_chat_template(messages, add_generation_prompt=True, tokenize=True) with the tokenizer's own
  template (tests run tpkit-generate --print-prompt-ids on a tiny model with that vocabulary).

Before writing anything the script renders every line of golden_chat_public.jsonl again and stops
if one differs. CI never runs this: the outputs are committed. Running it again rewrites them byte
for byte.

    python3 -m venv ../venv-text && ../venv-text/bin/pip install -r tools/requirements-text.txt
    ../venv-text/bin/python tools/make_chat_fixtures.py [--models ../shared/models]
"""
import os

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("RAYON_NUM_THREADS", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import argparse  # noqa: E402
import copy  # noqa: E402
import json  # noqa: E402
import random  # noqa: E402
import sys  # noqa: E402

import jinja2  # noqa: E402
import tokenizers  # noqa: E402
import transformers  # noqa: E402
from tokenizers import Tokenizer  # noqa: E402
from transformers import AutoTokenizer  # noqa: E402
from transformers.utils.chat_template_utils import _compile_jinja_template  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "data", "chat")

LLAMA3_STYLE = r'''{#- llama3_style.jinja: a chat layout with the features of the Llama 3.1 Instruct template
    (header tokens, one system block with a date, JSON tool definitions, single JSON tool
    calls, ipython tool results), written independently for tpkit's fixtures. -#}
{{- bos_token }}
{%- if date_string is not defined %}
    {%- set date_string = "01 Jan 2025" %}
{%- endif %}
{%- set user_gets_tools = tools_in_user_message if tools_in_user_message is defined else true %}
{%- set st = namespace(system_text="", rest=messages) %}
{%- if messages[0]['role'] == 'system' %}
    {%- set st.system_text = messages[0]['content'] | trim %}
    {%- set st.rest = messages[1:] %}
{%- endif %}
{%- macro open_turn(role) -%}
    <|start_header_id|>{{ role }}<|end_header_id|>{{ "\n\n" }}
{%- endmacro %}
{%- macro function_list() %}
    {%- for fn in tools %}
        {{- fn | tojson(indent=4) }}
        {{- "\n\n" }}
    {%- endfor %}
{%- endmacro %}

{#- The system turn is always written. #}
{{- open_turn("system") }}
{%- if tools is not none %}
    {{- "Environment: ipython\n" }}
{%- endif %}
{{- "Knowledge cutoff: 2023-12\n" }}
{{- "Current date: " ~ date_string ~ "\n\n" }}
{%- if tools is not none and not user_gets_tools %}
    {{- "These functions are available. To use one, answer with a single JSON object "
        "{\"name\": <function name>, \"parameters\": <arguments object>} and nothing else.\n\n" }}
    {{- function_list() }}
{%- endif %}
{{- st.system_text }}
{{- "<|eot_id|>" }}

{#- With tools_in_user_message (the default) the definitions go into the first user turn. #}
{%- if tools is not none and user_gets_tools %}
    {%- if st.rest | length == 0 or st.rest[0]['role'] != 'user' %}
        {{- raise_exception("tools_in_user_message needs the conversation to open with a user turn") }}
    {%- endif %}
    {%- set opening = st.rest[0]['content'] | trim %}
    {%- set st.rest = st.rest[1:] %}
    {{- open_turn("user") }}
    {{- "Reply to the request below with one function call, written as JSON "
        "{\"name\": <function name>, \"parameters\": <arguments object>}. The functions:\n\n" }}
    {{- function_list() }}
    {{- opening ~ "<|eot_id|>" }}
{%- endif %}

{%- for turn in st.rest %}
    {%- if turn.role in ["ipython", "tool"] %}
        {{- open_turn("ipython") }}
        {%- if turn.content is mapping or (turn.content is iterable and turn.content is not string) %}
            {{- turn.content | tojson }}
        {%- else %}
            {{- turn.content }}
        {%- endif %}
        {{- "<|eot_id|>" }}
    {%- elif turn.tool_calls is defined and turn.tool_calls %}
        {%- if turn.tool_calls | length > 1 %}
            {{- raise_exception("llama3_style takes at most one tool call per assistant turn, got " ~ turn.tool_calls | length) }}
        {%- endif %}
        {%- set call = turn.tool_calls[0] %}
        {%- if call.function is defined %}
            {%- set call = call.function %}
        {%- endif %}
        {{- open_turn("assistant") }}
        {%- if call.arguments is string %}
            {{- '{"name": "' ~ call.name ~ '", "parameters": ' ~ call.arguments ~ '}' }}
        {%- else %}
            {{- {"name": call.name, "parameters": call.arguments} | tojson }}
        {%- endif %}
        {{- "<|eot_id|>" }}
    {%- elif turn.role in ("user", "assistant", "system") %}
        {{- open_turn(turn.role) ~ turn.content | trim ~ "<|eot_id|>" }}
    {%- else %}
        {{- raise_exception("llama3_style: unknown role '" ~ turn.role ~ "'") }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- open_turn("assistant") }}
{%- endif %}
'''

FEATURES = r'''{#- features.jinja: tpkit's feature-coverage chat template. No model uses this format; it renders
    a conversation while exercising most of the Jinja found in chat templates, and more. -#}
{%- set major, minor = 2, 7 -%}
{%- set ns = namespace(turns=0, chars=0, words=0, calls=0, last_role=none, seen=[]) -%}
{%- set roles_known = ['system', 'user', 'assistant', 'tool'] -%}
{%- set marks = {'system': '#', "user": '>', 'assistant': '<', 'tool': '%'} -%}
{%- macro rule(width=12, ch='-') -%}
{{ ch * width }}
{%- endmacro -%}
{%- macro kv(key, value, quote=false) -%}
{{ key }}={% if quote %}"{{ value }}"{% else %}{{ value }}{% endif %}
{%- endmacro -%}
{%- macro describe(v) -%}
{%- if v is none %}null
{%- elif v is boolean %}{{ 'yes' if v else 'no' }}{{ ' (true)' if v is true }}{{ ' (false)' if v is false }}
{%- elif v is integer %}int:{{ v }}{{ ' odd' if v is odd else ' even' }}{% if v is divisibleby 3 %}/3{% endif %}{% if v < 0 %} abs={{ v | abs }}{% endif %}
{%- elif v is float %}float:{{ v }} r2={{ v | round(2) }} floor={{ v | round(0, 'floor') }} ceil={{ v | round(1, 'ceil') }}{% if v | abs < 1000000 %} int={{ v | int }}{% endif %}
{%- elif v is string %}str[{{ v | length }}]:{{ v | upper }}
{%- elif v is mapping %}map{{ v | dictsort | map('first') | list }}
{%- elif v is sequence %}seq({{ v | length }}) nums={{ v | select('number') | list | sum }} strs={{ v | select('string') | map('upper') | join('/') }}
{%- else %}?
{%- endif %}
{%- endmacro -%}
{%- set banner -%}
    {{ bos_token | default('<BOS>', true) }}[features v{{ major ~ '.' ~ minor }}; {{ messages | length }} messages, {{ messages | count }} again]
{%- endset -%}
{{ banner | trim }}
{# roles in order of first appearance, then sorted both ways #}
roles: {{ messages | map(attribute='role') | unique | join(',') }} / {{ messages | map(attribute='role') | unique | sort | join(',') }} / {{ messages | map(attribute='role') | list | sort(reverse=true) | first }}
users: {{ messages | selectattr('role', 'equalto', 'user') | list | length }}, non-user: {{ messages | rejectattr('role', '==', 'user') | list | length }}, empty: {{ messages | rejectattr('content') | list | length }}, with calls: {{ messages | selectattr('tool_calls', 'defined') | selectattr('tool_calls') | list | length }}
{% set texts = messages | map(attribute='content') | select('string') | list %}
lengths: {{ texts | map('length') | list }} min={{ texts | map('length') | min }} max={{ texts | map('length') | max }} sum={{ texts | map('length') | sum }}
tests: {{ add_generation_prompt is true }} {{ tools is none }} {{ enable_thinking is undefined }} {{ messages is sequence }} {{ messages[0] is mapping }} {{ messages[0].role is iterable }} {{ 0 is false }} {{ ns.turns is number }} {{ 1.0 is float }}
{% if tools %}
{{ rule(20, '=') }}
    {% for t in tools | sort(attribute='function.name') %}
        {% set f = t.function %}
tool {{ loop.index }}/{{ loop.length }} {{ f.name }}: {{ f.description | default('(no description)', true) | trim }}
        {% set req = f.parameters.required | default([]) %}
        {% for name, spec in f.parameters.properties | items %}
  - {{ name }}{{ '*' if name in req else '' }} {{ spec.type | default('any') }}{% if spec.enum is defined %} one of {{ spec.enum | join('|') }}{% endif %}{% if spec.default is defined %} default {{ spec.default | tojson }}{% endif +%}
        {% else %}
  (no parameters)
        {% endfor %}
  sorted: {{ f.parameters | tojson(sort_keys=true) }}
    {% endfor %}
names: {{ tools | map(attribute='function.name') | list | tojson }}
{{ rule(ch='=', width=20) }}
{% endif %}
{% for m in messages %}
    {% if m.role not in roles_known %}
        {{- raise_exception('features.jinja: unknown role ' ~ m.role | tojson ~ ' at message ' ~ loop.index0) }}
    {% endif %}
    {% set ns.turns = ns.turns + 1 %}
    {% set content = m.content if m.content is string else (m.content | tojson if m.content is not none else '') %}
    {% set ns.chars = ns.chars + content | length %}
    {% set ns.words = ns.words + content | wordcount %}
    {% if m.role not in ns.seen %}{% set ns.seen = ns.seen + [m.role] %}{% endif %}
[{{ loop.index }}/{{ loop.length }} {{ loop.cycle('odd', 'even') }} rev={{ loop.revindex }}/{{ loop.revindex0 }} {{ marks[m.role] }}{{ m.role | upper }}]
    {%- if loop.first %} first{% endif %}{% if loop.last %} last{% endif %}
    {%- if not loop.first and loop.previtem.role == m.role %} repeat-of-previous{% endif %}
    {%- if not loop.last %} next={{ loop.nextitem.role | capitalize }}{% endif %}
    {%- if loop.changed(m.role) %} changed{% endif %}

    {% if m.role == 'system' %}
    {%+ if loop.index0 > 0 %}(late system){% endif %} {{ content | trim | title }}
    {% elif m.role == 'user' %}
        {% set head, tail = (content ~ ' ').split(' ', 1) %}
 head={{ head | tojson }} tail-words={{ tail.split() | length }} lines={{ content.splitlines() | length }}
 digest: {{ content[:5][::-1] | tojson }} {{ content[-3:] | tojson }} {{ content[::2] | length }} {{ content[5:1:-2] | tojson }}
 question={{ content.rstrip().endswith(('?', '？')) }} shout={{ content is upper }} quiet={{ content is lower }} find={{ content.find('?') }} count_a={{ content.count('a') }}
 words:
        {%- for w in content.split() if w | length > 3 %}
            {%- if loop.index > 4 %}{% break %}{% endif %}
            {%- if w.startswith('<') %}{% continue %}{% endif %}
 {{ loop.index0 }}:{{ w | lower | replace('"', "'") }}
        {%- else %} (none)
        {%- endfor %}

 escaped: {{ content[:40] | e }}|{{ content[:40] | escape | length }}|{{ '<b>' | safe }}
 stripped: {{ content.strip() | tojson }} {{ content.lstrip('\n ') | length }} {{ content.rstrip(' \n\t.!?') | length }}
 split2: {{ content.split(',', 2) | length }} rsplit: {{ content.rsplit(' ', 1)[-1] | tojson }}
    {% elif m.role == 'assistant' %}
        {% if m.reasoning_content is defined and m.reasoning_content is string %}
 reasoning({{ m.reasoning_content | wordcount }} words): {{ m.reasoning_content | trim | indent(2) }}
        {% elif '</think>' in content %}
            {% set parts = content.split('</think>') %}
 think({{ parts | length - 1 }}): {{ parts[0].replace('<think>', '').strip() | center(30) if parts[0] | length < 20 else parts[0] | wordcount }}
            {% set content = parts | last %}
        {% endif %}
 says: {{ content | trim | indent(3, first=false) }}
        {% for call in m.tool_calls | default([], true) %}
            {% set ns.calls = ns.calls + 1 %}
            {% set f = call.function if call.function is defined else call %}
 call #{{ ns.calls }} {{ f.name }}{% if call.id is defined %} id={{ call.id }}{% endif +%}
            {% if f.arguments is string %}
   raw={{ f.arguments }}
            {% elif f.arguments is mapping %}
                {% for k, v in f.arguments.items() %}
   {{ kv(k, describe(v)) }}
                {% endfor %}
   keys={{ f.arguments.keys() | list | sort | join(',') }} json={{ f.arguments | tojson }}
   indented={{ f.arguments | tojson(indent=1) | indent(3) }}
            {% endif %}
        {% else %}
 (no tool calls)
        {% endfor %}
    {% else %}
 result ({{ content | length }} chars, {{ content.splitlines() | length }} lines):
{{ content | indent(4, true) }}
    {% endif %}
    {% set ns.last_role = m.role %}
{% endfor %}
{{ rule() }}
stats: turns={{ ns.turns }} chars={{ ns.chars }} words={{ ns.words }} calls={{ ns.calls }} avg={{ (ns.chars / ns.turns) | round(3) }} div={{ ns.chars // ns.turns }} mod={{ ns.chars % 7 }} sq={{ ns.turns ** 2 }} neg={{ -ns.chars // 3 }} {{ (ns.chars / 4) }}
seen: {{ ns.seen | join(' > ') }}; last={{ ns.last_role }}; last-is-user={{ ns.last_role == 'user' }}; {{ 'mixed' if ns.seen | length > 2 }}|{{ 'x' if false }}|
checks: {{ 1 < ns.turns < 5 }} {{ ns.turns is even }} {{ ns.turns in range(1, 4) }} {{ ns.turns not in [2, 3] }} {{ raise_exception is callable }} {{ ns.last_role is sameas none }} {{ ns.turns is ge 2 }} {{ ns.turns is lt 3 }} {{ ns.turns is ne 1 }} {{ not ns.turns or ns.calls and true }}
literals: {{ [1, 2.5, -3, 'x', "y\t", none, true, True, False, None] | tojson }} {{ (1, 'two') | list | tojson }} {{ dict(b=1, a=[1, 2]) | dictsort | tojson }} {{ {'k': 1, "j": 2} | dictsort(by='value', reverse=true) | first | first }}
ranges: {{ range(3) | list | join }} {{ range(1, 4) | join(',') }} {{ range(10, 0, -3) | list }} {{ range(ns.turns) | sum }}
text: {{ 'it\'s a "mixed" case' | title }} {{ "it's a title".title() }} {{ 'hello world' | capitalize }} {{ 'Hello'.lower() ~ 'x'.upper() }} {{ 'a-b-c' | replace('-', '+', 1) }} {{ 'abc' | reverse }} {{ 'abc' | list | reverse | join }} {{ [3, 1, 2] | sort | last }} {{ 'é' | string | length }} {{ '4.5' | float + '3' | int }} {{ 3.7 | int }} {{ -2.5 | round }} {{ 2.5 | round }}
{% if add_generation_prompt %}
[{{ ns.turns + 1 }}/{{ ns.turns + 1 }} >ASSISTANT]
    {%- if enable_thinking is defined %}{{ ' thinking=' ~ (enable_thinking | string | lower) }}{% endif +%}
{% endif %}
'''


# ----------------------------------------------------------------------------------------------
# Conversation material
# ----------------------------------------------------------------------------------------------

WORDS = ("the of and to in is was he for it with as his on be at by had are but from or have an they which one "
         "you were her all she there would their we him been has when who will more no if out so said what up its "
         "about into than them can only other new some could time these two may then do first any my now such like "
         "our over man me even most made after also did many before must through back years where much your way "
         "weather Paris Tokyo recipe bread python list sort prime number email meeting tomorrow train ticket "
         "translate summary poem river mountain invoice refund password printer").split()
UNICODE = ["\u4f60\u597d\uff0c\u4e16\u754c\uff01", "\u65e5\u672c\u8a9e\u306e\u30c6\u30ad\u30b9\u30c8",
           "\ud55c\uad6d\uc5b4", "\U0001F468\u200d\U0001F469\u200d\U0001F467\u200d\U0001F466", "\U0001F44D\U0001F3FD",
           "\U0001F1EB\U0001F1F7", "\u2764\ufe0f", "\U0001F600", "Caf\u00e9 na\u00efve r\u00e9sum\u00e9",
           "Cafe\u0301 (NFD)", "\u0301lone mark", "Vie\u0323\u0302t Nam", "\u0645\u0631\u062d\u0628\u0627 \u0628\u0627\u0644\u0639\u0627\u0644\u0645",
           "\u05e9\u05dc\u05d5\u05dd", "\u0928\u092e\u0938\u094d\u0924\u0947", "stra\u00dfe \u0130stanbul \ufb01ne",
           "nbsp\u00a0here", "ideographic\u3000space", "zero\u200bwidth", "line\u2028separator", "\u00bd \u00b2 \u2167",
           "\U0001D400\U0001D401", "\u03a3\u03bf\u03c6\u03af\u03b1 \u03c2"]
SPECIAL_TEXT = ["<|im_start|>", "<|im_end|>", "<|endoftext|>", "<think>", "</think>", "<tool_call>", "</tool_call>",
                "<tool_response>", "</tool_response>", "<s>", "</s>", "[INST]", "[/INST]", "<unk>", "<|eot_id|>",
                "<|start_header_id|>", "<|end_header_id|>", "<|user|>", "<|assistant|>", "<|system|>",
                "{{ messages }}", "{% if x %}", "{#", "<<SYS>>", "<|im_start|>assistant\n"]
CODE = ["def f(x):\n    return x * 2\n", "for (int i = 0; i < n; ++i) {\n\tsum += a[i];\n}",
        "print(\"hello\\n\")  # a 'quote'", "SELECT * FROM t WHERE name = 'O''Brien';", "C:\\Users\\me\\file.txt",
        "const o = {\"a\": [1, 2], 'b': null};", "x = {{ y }} {% raw %}", "a\\tb\\u00e9 \\\\ end"]
THINK_PATTERNS = ["<think>\n{r}\n</think>\n\n{a}", "<think>{r}</think>{a}", "{r}\n</think>\n\n{a}",
                  "<think>\n\n</think>\n\n{a}", "<think>\n{r}\n</think>\n\n<think>{r}</think>{a}", "{a}</think>",
                  "<think>\n{r}\n</think>", "\n\n<think>\n{r}\n</think>\n\n\n{a}\n", "<think>{r}\n\n</think>\n\n\n\n{a}"]
DATES = ["26 Jul 2024", "01 Jan 1970", "29 Feb 2028", "3 March 2025", "2025-11-29", "\u4e8c\u3007\u4e8c\u56db\u5e74",
         ""]


def sentence(rng, lo=2, hi=9):
    words = [rng.choice(WORDS) for _ in range(rng.randint(lo, hi))]
    s = " ".join(words)
    return s[0].upper() + s[1:] + rng.choice([".", "?", "!", "", "..."])


def text(rng, weights=None):
    kinds = ["plain", "plain", "plain", "question", "empty", "ws", "multiline", "unicode", "special", "code",
             "json", "mixed"]
    kind = rng.choice(weights or kinds)
    if kind == "plain":
        return sentence(rng)
    if kind == "question":
        return sentence(rng, 3, 9).rstrip(".!") + "?"
    if kind == "empty":
        return ""
    if kind == "ws":
        pads = [" ", "  ", "\n", "\n\n", "\t", " \n ", "\r\n", "\n  \n"]
        return rng.choice(pads + [""]) + sentence(rng) + rng.choice(pads)
    if kind == "multiline":
        lines = [rng.choice([sentence(rng), "", "- " + sentence(rng, 1, 4), "    indented line",
                             "\t" + sentence(rng, 1, 3)]) for _ in range(rng.randint(2, 5))]
        return rng.choice(["\n", "\n", "\r\n", "\n\n"]).join(lines) + rng.choice(["", "\n"])
    if kind == "unicode":
        return " ".join(rng.choice(UNICODE + [sentence(rng, 1, 3)]) for _ in range(rng.randint(1, 3)))
    if kind == "special":
        return "".join(rng.choice(SPECIAL_TEXT + [" ", "\n", sentence(rng, 1, 3)]) for _ in range(rng.randint(1, 4)))
    if kind == "code":
        return rng.choice(["Fix this:\n", "", "```\n"]) + rng.choice(CODE) + rng.choice(["", "\n```"])
    if kind == "json":
        return json.dumps(json_value(rng, 2), ensure_ascii=rng.random() < 0.3)
    return text(rng) + rng.choice([" ", "\n", ""]) + text(rng)


FLOATS = [0.5, 2.25, -1.75, 0.1, 3.0, 1e-07, 1e+20, 12345.678, -0.0, 100.0, 0.30000000000000004, 1.5e-5, 2.0**0.5]
INTS = [0, 1, -1, 7, 42, -273, 1000000, 9007199254740993, 2**31, -2**40]
STRINGS = ["Paris", "", " padded ", "\u6771\u4eac", "O'Brien", "say \"hi\"", "back\\slash", "tab\there",
           "line\nbreak", "<b>&amp;</b>", "\U0001F600", "e\u0301", "</tool_call>", "null", "1e3", "\u2028"]


def json_value(rng, depth):
    r = rng.random()
    if depth <= 0 or r < 0.55:
        return rng.choice([rng.choice(INTS), rng.choice(FLOATS), rng.choice(STRINGS), True, False, None,
                           rng.choice(STRINGS), rng.randint(-100, 100)])
    if r < 0.78:
        return [json_value(rng, depth - 1) for _ in range(rng.randint(0, 3))]
    keys = ["a", "b", "id", "name", "value", "\u540d\u524d", "x y", "nested", "Z", "_k", "emoji\U0001F600"]
    return {k: json_value(rng, depth - 1) for k in rng.sample(keys, rng.randint(0, 3))}


def fn(name, description, properties, required=None, **extra):
    params = {"type": "object", "properties": properties}
    if required is not None:
        params["required"] = required
    out = {"name": name}
    if description is not None:
        out["description"] = description
    out["parameters"] = params
    out.update(extra)
    return {"type": "function", "function": out}


TOOLS = [
    fn("get_weather", "Get the current weather for a city.",
       {"city": {"type": "string", "description": "City name, e.g. Paris"},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"], "default": "celsius"},
        "days": {"type": "integer", "minimum": 1, "maximum": 14, "default": 3},
        "hourly": {"type": "boolean", "default": False}}, ["city"]),
    fn("search_web", "Search the web and return the top results.\nUse for recent events.",
       {"query": {"type": "string"},
        "filters": {"type": "object", "properties": {
            "lang": {"type": "string", "enum": ["en", "zh", "fr"]},
            "after": {"type": "string", "format": "date"},
            "limit": {"type": "integer", "minimum": 1, "maximum": 50},
            "min_score": {"type": "number", "default": 0.5}}, "required": ["lang"]}}, ["query"]),
    fn("calculator", "Evaluate an arithmetic expression like \"2 * (3 + 4)\".",
       {"expression": {"type": "string"}, "precision": {"type": "integer", "default": None}}, ["expression"]),
    fn("send_email", "Send an e-mail. Returns the message id.",
       {"to": {"type": "array", "items": {"type": "string", "format": "email"}, "minItems": 1},
        "subject": {"type": "string"}, "body": {"type": "string"},
        "priority": {"type": "integer", "enum": [1, 2, 3]}, "cc": {"type": ["array", "null"], "default": None}},
       ["to", "subject", "body"]),
    fn("translate", "\u7ffb\u8bd1\u6587\u672c \u2014 translate text \u2713",
       {"text": {"type": "string"}, "target": {"type": "string", "enum": ["zh", "ja", "fr", "de"]},
        "formal": {"type": "boolean"}}, ["text", "target"]),
    fn("get_time", "Current time; takes no arguments.", {}),
    fn("set_thermostat", None,
       {"value": {"type": "number", "default": 21.5}, "scale": {"type": "number", "default": 1e-07},
        "ceiling": {"type": "number", "default": 1e+20}, "zone": {"type": "integer", "default": -1}}, ["value"]),
    fn("run_python", "Run Python code in a sandbox. Output is captured from stdout; </tools> and <tool_call> are "
       "plain text here.", {"code": {"type": "string"}, "timeout_s": {"type": "number", "default": 2.5}}, ["code"]),
    fn("book_table", "Reserve a restaurant table.",
       {"restaurant": {"type": "object", "properties": {"name": {"type": "string"},
                                                        "location": {"type": "object", "properties": {
                                                            "lat": {"type": "number"}, "lon": {"type": "number"}}}}},
        "party_size": {"type": "integer"}, "time": {"type": "string", "description": "ISO 8601, e.g. 2025-01-31T19:30"},
        "notes": {"type": ["string", "null"], "default": None}}, ["restaurant", "party_size", "time"],
       **{"return": {"type": "object", "description": "confirmation"}}),
]


def args_for(rng, tool):
    props = tool["function"]["parameters"]["properties"]
    out = {}
    for name, spec in props.items():
        if rng.random() < 0.3 and name not in tool["function"]["parameters"].get("required", []):
            continue
        out[name] = value_for(rng, spec)
    if rng.random() < 0.15:
        out["extra_\u00e9"] = json_value(rng, 2)
    return out


def value_for(rng, spec):
    t = spec.get("type")
    if "enum" in spec and rng.random() < 0.8:
        return rng.choice(spec["enum"])
    if isinstance(t, list):
        t = rng.choice(t)
    if t == "string":
        return rng.choice(STRINGS + [sentence(rng, 1, 4), rng.choice(UNICODE)])
    if t == "integer":
        return rng.choice(INTS + [rng.randint(1, 20)])
    if t == "number":
        return rng.choice(FLOATS + [rng.randint(-5, 5)])
    if t == "boolean":
        return rng.random() < 0.5
    if t == "array":
        return [rng.choice(["a@example.com", "\u674e@\u4f8b\u5b50.cn", "x"]) for _ in range(rng.randint(0, 3))]
    if t == "object":
        sub = spec.get("properties")
        if sub:
            return {k: value_for(rng, v) for k, v in sub.items() if rng.random() < 0.8}
        return json_value(rng, 2)
    if t == "null":
        return None
    return json_value(rng, 1)


def tool_call(rng, tools, string_args):
    tool = rng.choice(tools or TOOLS)
    args = args_for(rng, tool)
    if string_args and rng.random() < 0.35:
        args = json.dumps(args, ensure_ascii=rng.random() < 0.5, separators=rng.choice([None, (",", ":")]))
    fn_ = {"name": tool["function"]["name"], "arguments": args}
    r = rng.random()
    if r < 0.6:
        return {"type": "function", "function": fn_}
    if r < 0.85:
        return {"id": "call_%06d" % rng.randint(0, 999999), "type": "function", "function": fn_}
    return fn_


def tool_result(rng, structured):
    r = rng.random()
    if structured and r < 0.3:
        return json_value(rng, 3) if rng.random() < 0.8 else rng.choice([{"temperature": 21.5, "unit": "C"},
                                                                          [1, 2, 3], [], {}])
    if r < 0.6:
        return json.dumps(json_value(rng, 3), ensure_ascii=False)
    return text(rng)


def think_content(rng):
    pattern = rng.choice(THINK_PATTERNS)
    return pattern.format(r=text(rng, ["plain", "plain", "multiline", "ws", "unicode", "empty"]),
                          a=text(rng, ["plain", "plain", "ws", "multiline", "unicode", "special", "empty"]))


class Spec:
    """What a template accepts; the generator makes conversations inside (and a little outside) it."""

    def __init__(self, **kw):
        self.system = 0.5              # chance of a leading system message
        self.max_exchanges = 3
        self.calls = 0.0               # chance that an assistant turn calls tools
        self.max_calls = 3
        self.single_call = 0.7         # chance that a call turn has exactly one call
        self.string_args = False       # arguments may be JSON strings
        self.none_content = False      # assistant content may be None when it calls tools
        self.think = 0.0               # chance of <think> in assistant content
        self.reasoning = 0.0           # chance of a reasoning_content field
        self.reasoning_none = False
        self.tools = 0.0               # chance of tool definitions
        self.empty_tools = 0.0         # chance of tools=[]
        self.structured_results = False
        self.tool_roles = ["tool"]
        self.multimodal = 0.0          # chance that a user content is a list of parts
        self.tool_response_user = 0.0  # chance of a user turn that is a <tool_response> wrapper
        self.mutations = []            # (weight, function) applied with chance `mutate`
        self.mutate = 0.0
        self.kwargs = lambda rng: {}
        self.__dict__.update(kw)


def user_message(rng, spec):
    if rng.random() < spec.multimodal:
        parts = [{"type": "text", "text": text(rng)}]
        if rng.random() < 0.5:
            parts.append({"type": "image", "url": "https://example.com/cat.png"})
        return {"role": "user", "content": parts}
    if rng.random() < spec.tool_response_user:
        return {"role": "user", "content": "<tool_response>" + text(rng, ["plain", "json", "ws"]) + "</tool_response>"}
    return {"role": "user", "content": text(rng)}


def assistant_message(rng, spec, calls=None):
    content = think_content(rng) if rng.random() < spec.think else text(rng)
    if calls and rng.random() < 0.5:
        content = rng.choice(["", "", "Let me check.", "\n", "<think>\nNeed a tool.\n</think>\n\n"])
        if spec.none_content and rng.random() < 0.4:
            content = None
    m = {"role": "assistant", "content": content}
    if rng.random() < spec.reasoning:
        m["reasoning_content"] = (None if spec.reasoning_none and rng.random() < 0.3 else
                                  text(rng, ["plain", "multiline", "ws", "empty", "unicode"]))
    if calls:
        m["tool_calls"] = calls
    return m


def conversation(rng, spec, tools):
    msgs = []
    if rng.random() < spec.system:
        msgs.append({"role": "system", "content": text(rng)})
    n = rng.randint(1, spec.max_exchanges)
    for i in range(n):
        last = i == n - 1
        msgs.append(user_message(rng, spec))
        if last and rng.random() < 0.5:
            break
        if rng.random() < spec.calls:
            k = 1 if rng.random() < spec.single_call else rng.randint(2, spec.max_calls)
            msgs.append(assistant_message(rng, spec, [tool_call(rng, tools, spec.string_args) for _ in range(k)]))
            for _ in range(k):
                msgs.append({"role": rng.choice(spec.tool_roles), "content": tool_result(rng, spec.structured_results)})
            if last and rng.random() < 0.3:
                break
        msgs.append(assistant_message(rng, spec))
    if spec.mutations and rng.random() < spec.mutate:
        total = sum(w for w, _ in spec.mutations)
        pick = rng.uniform(0, total)
        for w, f in spec.mutations:
            pick -= w
            if pick <= 0:
                f(rng, msgs)
                break
    return msgs


# Mutations: conversations a strict template rejects (or a lenient one renders anyway).
def mut_double_user(rng, msgs):
    i = rng.randrange(len(msgs))
    msgs.insert(i, {"role": "user", "content": text(rng)})


def mut_double_assistant(rng, msgs):
    i = rng.randrange(len(msgs) + 1)
    msgs.insert(i, {"role": "assistant", "content": text(rng)})


def mut_starts_with_assistant(rng, msgs):
    start = 1 if msgs[0]["role"] == "system" else 0
    msgs.insert(start, {"role": "assistant", "content": text(rng)})


def mut_late_system(rng, msgs):
    msgs.insert(rng.randint(1, len(msgs)), {"role": "system", "content": text(rng)})


def mut_two_systems(rng, msgs):
    msgs.insert(0, {"role": "system", "content": text(rng)})
    msgs.insert(0, {"role": "system", "content": text(rng)})


def mut_odd_role(rng, msgs):
    msgs.insert(rng.randint(0, len(msgs)), {"role": rng.choice(["tool", "function", "developer", "ipython", "User", ""]),
                                            "content": text(rng)})


def mut_drop(rng, msgs):
    if len(msgs) > 1:
        del msgs[rng.randrange(len(msgs))]


def mut_only_system(rng, msgs):
    del msgs[:]
    msgs.append({"role": "system", "content": text(rng)})


def mut_many_calls(rng, msgs):
    for m in msgs:
        if m.get("tool_calls"):
            m["tool_calls"] = m["tool_calls"] + [tool_call(rng, None, True)]
            return
    msgs.append({"role": "assistant", "content": "", "tool_calls": [tool_call(rng, None, True) for _ in range(2)]})


def mut_tools_first_assistant(rng, msgs):
    start = 1 if msgs[0]["role"] == "system" else 0
    msgs.insert(start, {"role": "assistant", "content": text(rng)})


STRICT_MUTATIONS = [(3, mut_double_user), (2, mut_double_assistant), (3, mut_starts_with_assistant),
                    (2, mut_late_system), (1, mut_two_systems), (2, mut_odd_role), (1, mut_drop)]


def kw_thinking(rng):
    r = rng.random()
    return {} if r < 0.34 else {"enable_thinking": r < 0.67}


def kw_llama(rng):
    kw = {}
    if rng.random() < 0.5:
        kw["date_string"] = rng.choice(DATES)
    r = rng.random()
    if r < 0.3:
        kw["tools_in_user_message"] = False
    elif r < 0.45:
        kw["tools_in_user_message"] = True
    return kw


def kw_features(rng):
    kw = kw_thinking(rng)
    if rng.random() < 0.08:
        kw["bos_token"] = "<|override|>"  # kwargs win over the special-tokens map
    return kw


SPECS = {
    "qwen3": Spec(system=0.5, calls=0.35, string_args=True, none_content=True, think=0.45, reasoning=0.2,
                  tools=0.4, multimodal=0.05, tool_response_user=0.08,
                  mutations=[(1, mut_late_system), (1, mut_double_user), (1, mut_double_assistant), (1, mut_drop)],
                  mutate=0.15, kwargs=kw_thinking),
    "qwen3v1": Spec(system=0.5, calls=0.35, string_args=True, think=0.45, reasoning=0.2, reasoning_none=True,
                    tools=0.4, tool_response_user=0.08,
                    mutations=[(1, mut_late_system), (1, mut_double_user), (1, mut_drop)], mutate=0.15,
                    kwargs=kw_thinking),
    "qwen25": Spec(system=0.5, calls=0.35, string_args=True, none_content=True, think=0.1, tools=0.45,
                   mutations=[(1, mut_late_system), (1, mut_double_user), (1, mut_drop)], mutate=0.15,
                   kwargs=lambda rng: {"enable_thinking": False} if rng.random() < 0.1 else {}),
    "mistral": Spec(system=0.35, mutations=STRICT_MUTATIONS, mutate=0.3),
    "mistral2023": Spec(system=0.1, mutations=STRICT_MUTATIONS, mutate=0.25),
    "zephyr": Spec(system=0.5, mutations=[(2, mut_late_system), (2, mut_odd_role), (1, mut_double_user),
                                          (1, mut_starts_with_assistant), (1, mut_only_system)], mutate=0.3),
    "llama3": Spec(system=0.6, calls=0.4, single_call=0.85, string_args=True, none_content=True, tools=0.5,
                   empty_tools=0.05, structured_results=True, tool_roles=["ipython", "tool"],
                   mutations=[(3, mut_many_calls), (2, mut_odd_role), (2, mut_tools_first_assistant),
                              (1, mut_only_system), (1, mut_late_system)], mutate=0.2, kwargs=kw_llama),
    "features": Spec(system=0.5, calls=0.35, string_args=True, none_content=True, think=0.3, reasoning=0.15,
                     tools=0.25, empty_tools=0.05, structured_results=True, max_exchanges=2,
                     mutations=[(2, mut_odd_role), (1, mut_late_system), (1, mut_double_user)], mutate=0.12,
                     kwargs=kw_features),
}

# (template, tokenizer, spec, count): the shared templates with their own tokenizers, tpkit's two
# with qwen3 (no bos_token: it is undefined) and mistral-v1, and a few cross pairings.
CHAT_PLAN = [
    ("shared:qwen3/tokenizer_config.json", "qwen3", "qwen3", 110),
    ("shared:qwen3/chat_template_qwen3_v1.jinja", "qwen3", "qwen3v1", 80),
    ("shared:qwen3/chat_template_qwen2.5.jinja", "qwen3", "qwen25", 80),
    ("shared:mistral-v1/tokenizer_config.json", "mistral-v1", "mistral", 100),
    ("shared:mistral-v1-metaspace/tokenizer_config.json", "mistral-v1-metaspace", "mistral", 40),
    ("shared:mistral-v1/chat_template_mistral_v0.1_2023.jinja", "mistral-v1", "mistral2023", 80),
    ("shared:mistral-v1-metaspace/chat_template_mistral_v0.1_2023.jinja", "mistral-v1-metaspace", "mistral2023", 20),
    ("shared:mistral-v1/chat_template_zephyr.jinja", "mistral-v1", "zephyr", 80),
    ("shared:mistral-v1-metaspace/chat_template_zephyr.jinja", "mistral-v1-metaspace", "zephyr", 20),
    ("shared:mistral-v1/tokenizer_config.json", "qwen3", "mistral", 20),
    ("data:templates/llama3_style.jinja", "qwen3", "llama3", 60),
    ("data:templates/llama3_style.jinja", "mistral-v1", "llama3", 60),
    ("data:templates/features.jinja", "qwen3", "features", 40),
    ("data:templates/features.jinja", "mistral-v1", "features", 40),
]


# ----------------------------------------------------------------------------------------------
# Rendering chats the way transformers does
# ----------------------------------------------------------------------------------------------

TEMPLATE_FILES = {"llama3_style.jinja": LLAMA3_STYLE, "features.jinja": FEATURES}


class Unwanted(Exception):
    """jinja2 failed with something other than raise_exception: not a chat fixture."""


class Chats:
    def __init__(self, models):
        self.dir = os.path.join(models, "tokenizers")
        self.hf = {}
        self.raw = {}

    def tokenizer(self, name):
        if name not in self.hf:
            self.hf[name] = AutoTokenizer.from_pretrained(os.path.join(self.dir, name))
            self.raw[name] = Tokenizer.from_file(os.path.join(self.dir, name, "tokenizer.json"))
        return self.hf[name], self.raw[name]

    def template(self, ref):
        kind, rest = ref.split(":", 1)
        if kind == "data":
            assert rest.startswith("templates/"), ref
            return TEMPLATE_FILES[rest[len("templates/"):]]
        folder, name = rest.split("/")
        path = os.path.join(self.dir, folder, name)
        with open(path, encoding="utf-8") as f:
            if name == "tokenizer_config.json":
                text_ = json.load(f)["chat_template"]
                assert text_ == self.tokenizer(folder)[0].chat_template
                return text_
            return f.read()

    def record(self, tok_name, case_id, ref, messages, tools, add_generation_prompt, kwargs):
        tok, raw = self.tokenizer(tok_name)
        # Everything goes through JSON first, so the fixture holds exactly what was rendered.
        messages, tools, kwargs = json.loads(json.dumps([messages, tools, kwargs]))
        variables = {**tok.special_tokens_map, **kwargs}
        rendered = error = ids = None
        try:
            rendered = tok.apply_chat_template(copy.deepcopy(messages), tools=copy.deepcopy(tools),
                                               chat_template=self.template(ref),
                                               add_generation_prompt=add_generation_prompt, tokenize=False,
                                               **copy.deepcopy(kwargs))
        except jinja2.exceptions.TemplateError as e:
            if type(e) is not jinja2.exceptions.TemplateError:  # UndefinedError, SecurityError, ...
                raise Unwanted(f"{type(e).__name__}: {e}") from e
            error = str(e)
        except Exception as e:
            raise Unwanted(f"{type(e).__name__}: {e}") from e
        if rendered is not None:
            assert "object at 0x" not in rendered and "<generator" not in rendered, (case_id, rendered)
            ids = raw.encode(rendered, add_special_tokens=False).ids
            assert ids == tok(rendered, add_special_tokens=False)["input_ids"], case_id
        return {"tokenizer": tok_name, "id": case_id, "template": ref, "messages": messages, "tools": tools,
                "add_generation_prompt": add_generation_prompt, "kwargs": kwargs, "variables": variables,
                "rendered": rendered, "error": error, "ids": ids}


def dumps(record):
    s = json.dumps(record, ensure_ascii=False)
    for ch in "\u2028\u2029\u0085":  # keep one record per physical line for every line splitter
        s = s.replace(ch, "\\u%04x" % ord(ch))
    return s


def check_public(chats):
    path = os.path.join(chats.dir, "golden_chat_public.jsonl")
    with open(path, encoding="utf-8") as f:
        lines = f.read().splitlines()
    bad = 0
    for line in lines:
        want = json.loads(line)
        ref = "shared:%s/%s" % (want["tokenizer"], want["template"])
        got = chats.record(want["tokenizer"], want["id"], ref, want["messages"], want["tools"],
                           want["add_generation_prompt"], want["kwargs"])
        got["template"] = want["template"]
        if got != want or dumps(got) != line:
            bad += 1
            print("MISMATCH", want["id"], file=sys.stderr)
            for k in want:
                if got.get(k) != want[k]:
                    print("  %s: want %r\n  %s  got %r" % (k, want[k], " " * len(k), got.get(k)), file=sys.stderr)
    print(f"golden_chat_public.jsonl: {len(lines) - bad}/{len(lines)} records reproduced exactly")
    if bad:
        sys.exit("the rendering here does not reproduce golden_chat_public.jsonl; refusing to write fixtures")


def short_name(ref):
    folder_file = ref.split(":", 1)[1]
    folder, name = folder_file.rsplit("/", 1)
    if name == "tokenizer_config.json":
        return folder + "-config"
    return name[len("chat_template_"):] if name.startswith("chat_template_") else name


def chat_records(chats):
    records = []
    for n, (ref, tok_name, spec_name, count) in enumerate(CHAT_PLAN):
        rng = random.Random(1000 + n)
        spec = SPECS[spec_name]
        seen = set()
        errors = retries = 0
        i = 0
        while i < count:
            tools = None
            if rng.random() < spec.tools:
                tools = [copy.deepcopy(t) for t in rng.sample(TOOLS, 1 if rng.random() < 0.6 else 2)]
            elif rng.random() < spec.empty_tools:
                tools = []
            messages = conversation(rng, spec, tools)
            if not messages:
                continue
            agp = rng.random() < 0.6
            kwargs = spec.kwargs(rng)
            key = json.dumps([messages, tools, agp, kwargs])
            if key in seen:
                continue
            seen.add(key)
            case_id = "%s:%s:%04d" % (tok_name, short_name(ref).replace(".jinja", ""), i)
            try:
                rec = chats.record(tok_name, case_id, ref, messages, tools, agp, kwargs)
            except Unwanted:
                retries += 1
                if retries > count:
                    raise
                continue
            errors += rec["error"] is not None
            records.append(rec)
            i += 1
        print(f"  {ref} with {tok_name}: {count} cases, {errors} raise_exception, {retries} regenerated")
    return records


# ----------------------------------------------------------------------------------------------
# Snippets: one feature (or a few) at a time, rendered by transformers' environment
# ----------------------------------------------------------------------------------------------

def hand_snippets():
    out = []

    def S(sid, template, context=None):
        out.append((sid, template, context or {}))

    # Whitespace control: trim_blocks and lstrip_blocks are on, keep_trailing_newline is off.
    S("ws-trim-lstrip", "a\n{% if true %}\nb\n{% endif %}\nc")
    S("ws-lstrip-indented", "  {% if true %}x{% endif %}  y")
    S("ws-lstrip-tabs", "\t\t{% if true %}\nx\n\t{% endif %}\ny")
    S("ws-lstrip-mixed-tabs-spaces", "x\n \t \t{% for i in [1, 2] %}\n\t{{ i }}\n \t{% endfor %}\nz")
    S("ws-plus-disables-lstrip", " \t {%+ if true %}x{% endif %}")
    S("ws-plus-disables-lstrip-2", "a\n    {%+ if true %}b\n    {%+ endif %}c")
    S("ws-lstrip-not-after-text", "ab {% if true %}x{% endif %} cd")
    S("ws-minus-block-both", "a {%- if true -%}   \n\n  b{%- endif %}")
    S("ws-minus-close-then-spaces-newlines", "{% if true -%}  \n \n\t x{% endif %}")
    S("ws-minus-variable", "x {{- ' y ' -}} z")
    S("ws-minus-variable-newlines", "a\n\n{{- 'b' -}}\n\nc")
    S("ws-variable-no-trim", "{{ 'a' }}\n{{ 'b' }}\n")
    S("ws-variable-no-lstrip", "  {{ 'x' }}")
    S("ws-trailing-newline-dropped", "line\n")
    S("ws-two-trailing-newlines", "line\n\n")
    S("ws-trailing-newline-after-expr", "{{ 'x' }}\n")
    S("ws-trailing-crlf", "x\r\n")
    S("ws-crlf-source", "a\r\nb\r\n{% if true %}\r\nc\r\n{% endif %}\r\nd")
    S("ws-cr-only-source", "a\rb\r{% if true %}\rc{% endif %}")
    S("ws-crlf-in-string-literal", "{{ 'x\r\ny' | length }} {{ 'x\r\ny' | tojson }}")
    S("ws-crlf-loop", "{% for i in range(2) %}\r\n{{ i }}\r\n{% endfor %}\r\n")
    S("ws-trim-only-one-newline", "{% if true %}\n\nx{% endif %}")
    S("ws-trim-spaces-kept", "{% set x = 1 %}   \nA")
    S("ws-plus-close-keeps-newline", "{% if true +%}\nx{% endif %}")
    S("ws-plus-close-endfor", "{% for i in [1, 2] +%}\n{{ i }}{% endfor %}")
    S("ws-block-only-lines-vanish", "start\n  {% set a = 1 %}\n  {% if a %}\n  kept\n  {% endif %}\nend")
    S("ws-comment-plain", "a\n  {# note #}\nb")
    S("ws-comment-minus", "a {#- comment -#} b")
    S("ws-comment-multiline", "{#\n multi\n line\n#}\nx")
    S("ws-comment-inline", "a{# c #}b")
    S("ws-comment-with-tags-inside", "x{# {% if %} {{ y }} #}y")
    S("ws-raw", "{% raw %}{{ not evaluated }} {% if %}{% endraw %}")
    S("ws-raw-minus", "a  {%- raw -%}  {{ x }}  {%- endraw -%}  b")
    S("ws-raw-newlines", "{% raw %}\n{{ x }}\n{% endraw %}\nz")
    S("ws-macro-definition-lines", "\n{% macro m() %}\n  inner\n{% endmacro %}\n[{{ m() }}]")
    S("ws-minus-unicode-space", "a\u00a0\u3000 {{- 'b' -}} \u2028\u00a0c")
    S("ws-lstrip-unicode-space", "x\n\u00a0{% if true %}y{% endif %}")
    S("ws-only-block", "{% if false %}x{% endif %}")
    S("ws-empty-template", "")
    S("ws-newline-only-template", "\n")
    S("ws-minus-in-for", "{% for i in [1, 2, 3] -%}\n  {{ i }}\n{%- endfor %}")
    S("ws-set-block-keeps-inner", "{% set x %}\n  a\n{% endset %}[{{ x }}]")
    S("ws-nested-indented-blocks", "<\n    {% for i in [1, 2] %}\n        {% if i is odd %}\n    odd {{ i }}\n        {% endif %}\n    {% endfor %}\n>")
    S("ws-tab-after-tag", "{% if true %}\t\nx{% endif %}")
    S("ws-minus-eats-all-before", "a \n\t \n  {%- if true %}b{% endif %}")
    S("ws-generation-tag", "A{% generation %}B{% endgeneration %}C")

    # Printing: Python's str() of every value.
    for sid, expr in [("int", "1"), ("neg-zero-int", "-0"), ("float-one", "1.0"), ("neg-zero", "-0.0"),
                      ("1e20", "1e20"), ("1e16", "1e16"), ("1e15", "1e15"), ("small", "1.5e-5"),
                      ("0.0001", "0.0001"), ("long-float", "123456789012345.6"), ("sum-float", "0.1 + 0.2"),
                      ("third", "1 / 3"), ("div", "10 / 4"), ("div-exact", "4 / 2"), ("floordiv", "7 // 2"),
                      ("floordiv-neg", "-7 // 2"), ("mod", "7 % 3"), ("mod-neg", "-7 % 3"), ("mod-neg-divisor", "7 % -3"),
                      ("floordiv-float", "7.5 // 2"), ("mod-float-neg", "-7.5 % 2"), ("pow", "2 ** 10"),
                      ("pow-neg", "2 ** -1"), ("pow-half", "2 ** 0.5"), ("pow-paren", "(-8) ** 2"),
                      ("pow-unary", "-2 ** 2"), ("pow-chain", "2 ** 3 ** 2"), ("precedence", "1 + 2 * 3"),
                      ("parens", "(1 + 2) * 3"), ("sub-chain", "10 - 2 - 3"), ("concat", "'a' ~ 1 ~ none ~ true"),
                      ("concat-float", "1 ~ 2.0"), ("str-times", "'ab' * 3"), ("times-str", "3 * 'ab'"),
                      ("list-times", "[1, 2] * 2"), ("list-plus", "[1] + [2, 'x']"), ("str-plus", "'a' + 'b'"),
                      ("int-plus-float", "1 + 1.5"), ("bool-plus", "true + 1"), ("int-times-float", "3 * 0.1"),
                      ("list-repr", "[1, 'a', none, true, 1.5]"), ("dict-repr", "{'a': 1, 'b': [none, false]}"),
                      ("tuple-1", "(1,)"), ("tuple-2", "(1, 'a')"), ("empty-tuple", "()"), ("empty-list", "[]"),
                      ("empty-dict", "{}"), ("repr-apostrophe", "[\"it's\"]"), ("repr-dquote", "['say \"hi\"']"),
                      ("repr-both-quotes", "['both \\' and \"']"), ("repr-escapes", "['\\n\\t\\\\']"),
                      ("repr-unicode", "['\u00e9', '\u65e5\u672c', '\U0001F600']"),
                      ("repr-nonprintable", "['\\u200b', '\\x00', '\\x7f', '\\u00a0', '\\u3000']"),
                      ("repr-floats", "[1.0, 1e20, -0.0, 0.1, 1e-7]"), ("repr-nested", "{'k': {'n': [1, {'m': none}]}}"),
                      ("repr-dict-keys", "{none: 2, 1.5: 'x', 2: 'y'}"), ("none", "none"), ("true", "true"),
                      ("false", "false"), ("True", "True"), ("None", "None"), ("TRUE-undefined", "TRUE"),
                      ("sq-string", "'str'"), ("dq-string", "\"dq\""), ("implicit-concat", "'a' \"b\" 'c'"),
                      ("hex", "0x1F"), ("octal", "0o17"), ("binary", "0b101"), ("underscores", "1_000_000"),
                      ("float-exp", "1.5e3"), ("float-exp-upper", "2E3"), ("float-exp-neg", "25e-1"),
                      ("int64-max", "9223372036854775807"), ("big-int", "9007199254740993"),
                      ("inf", "1e308 * 10"), ("neg-inf", "-1e308 * 10"), ("nan", "(1e308 * 10) - (1e308 * 10)"),
                      ("range", "range(3)"), ("range-step", "range(1, 10, 3)"), ("namespace", "namespace(a=1, b='x')"),
                      ("dict-call", "dict(a=1, b=none)"), ("string-list", "'abc' | list"),
                      ("items-list", "{'a': 1, 'b': 2}.items() | list"), ("dictsort-repr", "{'b': 1, 'a': 2} | dictsort"),
                      ("dict-items-view", "{'a': 1}.items()"), ("dict-keys-view", "{'a': 1}.keys()"),
                      ("dict-values-view", "{'a': 1}.values()"), ("markup", "'<b>' | e"),
                      ("neg-float", "-2.5"), ("unary-plus", "+3"), ("not-not", "not not 1"), ("neg-neg", "- -2")]:
        S("print-" + sid, "{{ " + expr + " }}")
    S("print-context-values", "{{ x }}|{{ y }}|{{ z }}|{{ f }}|{{ n }}|{{ b }}",
      {"x": [1, "a", None, True, 2.5, {"k": "v"}], "y": {"\u540d": "\u00e9", "q": "it's"}, "z": "plain",
       "f": 3.0, "n": None, "b": False})
    S("print-context-floats", "{% for v in vals %}{{ v }} {% endfor %}",
      {"vals": [0.1, 1e-07, 1e+20, 1e16, 123456789.0, 2.5e-300, -0.0, 1.7976931348623157e+308, 5e-324, 100.0,
                0.30000000000000004, 1.0000000000000002, 4.35, 1e22, 1e21, 9999999999999998.0]})
    S("print-context-ints", "{% for v in vals %}{{ v }} {% endfor %}",
      {"vals": [0, -1, 9007199254740993, -9223372036854775808, 9223372036854775807, 2**31]})

    # String literal escapes (the lexer decodes them like Python's unicode-escape).
    S("lit-newline", r"{{ 'a\nb' }}")
    S("lit-tab-dq", r'{{ "tab\there" }}')
    S("lit-escaped-squote", r"{{ 'q\'s' }}")
    S("lit-escaped-dquote", r'{{ "dq\"s" }}')
    S("lit-backslash", r"{{ '\\' }}|{{ '\\' | length }}")
    S("lit-unicode-escapes", r"{{ '\u00e9\x41\U0001F600' }}|{{ '\u00e9\x41\U0001F600' | length }}")
    S("lit-raw-non-ascii", "{{ '\u00e9\u65e5\U0001F600' | length }}{{ '\u00e9\u65e5\U0001F600' }}")
    S("lit-mixed-quotes", "{{ \"mixed 'quotes'\" }}{{ 'and \"these\"' }}")
    S("lit-template-syntax-in-string", "{{ '{{ not }}' }}{{ '%}' }}{{ \"{% x %}\" }}")
    S("lit-carriage-return-escape", r"{{ 'a\rb' | tojson }}")
    S("lit-true-forms", "{{ true }} {{ True }} {{ false }} {{ False }} {{ none }} {{ None }} {{ TRUE is defined }}")
    S("lit-none-is", "{{ none is none }} {{ None is none }} {{ none == None }}")
    S("lit-list-trailing-comma", "{{ [1, 2,] }} {{ {'a': 1,} }} {{ (1, 2,) }}")
    S("lit-nested-literals", "{{ [[1, [2, [3]]], {'a': {'b': ()}}] }}")

    # Operators, comparisons, truth.
    for sid, expr in [("chain-true", "1 < 2 < 3"), ("chain-false", "1 < 3 < 2"), ("int-eq-float", "1 == 1.0"),
                      ("eq-test-float", "1 is eq 1.0"), ("true-eq-one", "true == 1"), ("false-eq-zero", "0 == false"),
                      ("str-lt", "'a' < 'b'"), ("upper-lt-lower", "'B' < 'a'"), ("list-lt", "[1, 2] < [1, 3]"),
                      ("tuple-eq-list", "(1, 2) == [1, 2]"), ("none-eq-none", "none == none"), ("str-eq-int", "'1' == 1"),
                      ("ne-float", "1 != 1.0"), ("chain-mixed", "2 > 1.5 >= 1"), ("chain-eq", "1 == 1.0 == true"),
                      ("in-str", "'ab' in 'xaby'"), ("empty-in-str", "'' in 'a'"), ("in-list-float", "1 in [1.0, 2]"),
                      ("in-dict", "'a' in {'a': 1}"), ("int-in-dict", "1 in {'a': 1}"), ("not-in", "'a' not in ['b']"),
                      ("not-in-prec", "not 'a' in ['a']"), ("and-value", "1 and 2"), ("or-value", "0 or 'x'"),
                      ("or-list", "none or []"), ("or-zero", "'' or 0"), ("not-none", "not none"), ("not-list", "not []"),
                      ("and-list", "[] and 1"), ("if-else", "'a' if 0 else 'b'"), ("if-no-else", "'a' if [0]"),
                      ("if-no-else-false", "('x' if false) is defined"), ("nested-if", "1 if true else 2 if false else 3"),
                      ("if-precedence", "1 + 1 if false else 5"), ("mixed-cmp", "1.5 < 2 and 'b' > 'a' or 1 / 0"),
                      ("str-gt-unicode", "'\u00e9' > 'z'"), ("astral-cmp", "'\U0001F600' > '\uffff'"),
                      ("list-eq", "[1, [2]] == [1, [2]]"), ("dict-eq-order", "{'a': 1, 'b': 2} == {'b': 2, 'a': 1}"),
                      ("is-not", "1 is not none"), ("minus-filter-precedence", "-2.5 | abs"),
                      ("filter-after-paren", "(-2.5) | abs"), ("tilde-vs-times", "2 * 3 ~ 4"),
                      ("tilde-paren", "(1 + 2) ~ 3"), ("tilde-minus-paren", "'n=' ~ (5 - 1)"),
                      ("not-precedence", "not 1 == 2"), ("in-precedence", "1 + 1 in [2]")]:
        S("op-" + sid, "{{ " + expr + " }}")
    S("op-truthiness", "{% for v in vals %}{{ 'T' if v else 'F' }}{% endfor %}|{{ 'T' if missing else 'F' }}",
      {"vals": [0, 0.0, -0.0, "", " ", [], [0], {}, {"a": 0}, None, False, True, 1, "0", "False"]})
    S("op-short-circuit", "{{ false and undefined_var.x }}{{ true or (1 / 0) }}")
    S("op-string-mod", "{{ '%s=%d' % ('a', 3) }}|{{ '%05.1f' % 2.25 }}")
    S("op-string-mod-named", "{{ '%(a)s-%(b)05.1f %%' % {'a': 'x', 'b': 2.25} }}|{{ '%-4s|%4s|%.2s' % ('ab', 'cd', 'efg') }}")
    S("op-string-mod-ints", "{{ '%x %X %o %#x %#o %+d % d %c' % (255, 255, 8, 255, 8, 5, 5, 65) }}|{{ '%r' % ('q',) }}")
    S("str-format-basic", "{{ '{}-{}'.format(1, 'a') }}|{{ '{1}{0}{1}'.format('x', 'y') }}|{{ '{name}!'.format(name='Bo') }}|{{ '{{}}{}'.format(2) }}")
    S("str-format-specs", "{{ '{:>5}|{:<5}|{:^7}|{:*^7}|{:05d}|{:+d}|{: d}'.format('ab', 'cd', 'mid', 'x', 42, 7, 7) }}")
    S("str-format-numbers", "{{ '{:,}|{:_}|{:.2f}|{:,.1f}|{:08.3f}|{:e}|{:.3g}|{:%}|{:.1%}'.format(1234567, 1234567, 3.14159, 12345.678, -3.14159, 12345.678, 0.000123456, 0.25, 0.125) }}")
    S("str-format-bases", "{{ '{:x}|{:X}|{:#x}|{:o}|{:#o}|{:b}|{:#b}|{:c}|{:x}'.format(255, 255, 255, 8, 8, 5, 5, 65, -255) }}")
    S("str-format-conversions", "{{ '{!r}|{!s}|{!r:>6}|{0[0]}|{0[1]}|{1.role}'.format(['a', 'b'], m) }}", {"m": {"role": "user"}})
    S("str-format-floats-plain", "{{ '{}|{}|{}|{:.3}|{:10.2f}|{:<10.2f}|'.format(1.5, 1e20, 0.1, 3.14159, 2.5, 2.5) }}")
    S("str-format-bool-none", "{{ '{}|{}|{:d}|{:>6}'.format(true, none, true, 'x') }}")
    S("str-format-fields", "{{ '{0!r}|{0!s}|{1!r:>10}|{0[0]}|{0[1]}|{1.role}|{1[role]}'.format(['a', 'b'], m) }}", {"m": {"role": "user"}})
    S("op-string-mod-char", "{{ '%c%c' % ('x', 66) }}")
    S("access-slice-none", "[{{ none[:2] }}][{{ 5[1:] }}]")
    S("access-slice-huge-step", "{{ 'abc'[1::9223372036854775807] }}|{{ [1, 2, 3][::-9223372036854775807] }}")
    S("loop-depth-nested", "{% for a in [1, 2] %}{% for b in [3, 4] %}{{ loop.depth }}{{ loop.depth0 }}{% endfor %}{% endfor %}")
    S("macro-live-scope-loop", "{% for i in [1, 2] %}{% set x = i %}{% macro m() %}{{ x }}{% endmacro %}{% set x = 10 %}{{ m() }}{% endfor %}")
    S("macro-live-scope-nested", "{% macro outer() %}{% macro inner() %}I{{ v }}{% endmacro %}{% set v = 2 %}{{ inner() }}{% endmacro %}{{ outer() }}")
    S("print-list-with-undefined", "{{ [1, undefined_thing] }}")
    S("set-shadows-variable", "{% set eos_token = 'SET' %}{{ eos_token }}", {"eos_token": "</s>"})
    S("op-string-mod-floats", "{{ '%e %g %.3g %G %10.4f' % (12345.678, 0.0001, 2.5, 1e20, -3.14159) }}")

    # Filters.
    filt = [
        ("length-str", "{{ 'h\u00e9llo' | length }} {{ 'e\u0301' | length }} {{ '\U0001F468\u200d\U0001F469' | length }}"),
        ("length-containers", "{{ [1, 2] | length }} {{ {'a': 1} | length }} {{ (1, 2, 3) | length }} {{ undefined_x | length }}"),
        ("count", "{{ 'abc' | count }} {{ [none] | count }} {{ {} | count }}"),
        ("trim", "[{{ '  a b \n\t' | trim }}]"),
        ("trim-unicode-space", "[{{ '\u00a0\u3000\u2028 x \u0085\x1f' | trim }}]"),
        ("trim-chars", "[{{ 'xxhixyx' | trim('xy') }}]"),
        ("trim-number", "[{{ 12 | trim }}]"),
        ("default-undefined", "{{ missing | default('d') }} {{ missing | d('d2') }} {{ missing | default }}|"),
        ("default-none-kept", "{{ none | default('d') }} {{ false | default('d') }} {{ '' | default('d') }}|"),
        ("default-boolean", "{{ none | default('d', true) }} {{ false | d('d', true) }} {{ '' | default('d', boolean=true) }} {{ 0 | d(7, true) }} {{ 'x' | d('d', true) }}"),
        ("default-attr", "{{ d.missing | default('dm') }} {{ d.present | default('dp') }}"),
        ("upper-lower", "{{ 'Stra\u00dfe \u0130x' | upper }} {{ 'Stra\u00dfe \u0130x' | lower | length }} {{ '\ufb01' | upper }}"),
        ("title", "{{ 'hello-world foo_bar it\\'s o\\'neil (x) [y] {z} <w> 3rd' | title }}"),
        ("title-unicode", "{{ '\u00e9cole \u00c9T\u00c9 stra\u00dfe' | title }}"),
        ("capitalize", "{{ 'hELLO World' | capitalize }} {{ '\u00e9T\u00c9' | capitalize }} {{ '' | capitalize }}|"),
        ("join-ints", "{{ [1, 2, 3] | join }} {{ [1, 2, 3] | join(', ') }} {{ [1, none, true] | join('-') }}"),
        ("join-attribute", "{{ users | join(', ', attribute='name') }}"),
        ("join-string", "{{ 'abc' | join('-') }}"),
        ("join-dict", "{{ {'a': 1, 'b': 2} | join('|') }}"),
        ("items", "{{ {'a': 1, 'b': [2]} | items | list }}"),
        ("items-undefined", "{{ missing | items | list }}"),
        ("items-loop", "{% for k, v in {'x': 1, 'y': 2} | items %}{{ k }}={{ v }};{% endfor %}"),
        ("list", "{{ 'ab\u00e9' | list }} {{ {'a': 1} | list }} {{ range(3) | list }} {{ (1, 2) | list }}"),
        ("first-last", "{{ [1, 2, 3] | first }} {{ [1, 2, 3] | last }} {{ 'xyz' | first }} {{ 'xyz' | last }}"),
        ("first-last-empty", "[{{ [] | first }}][{{ '' | last }}]"),
        ("first-last-dict", "{{ {'a': 1, 'b': 2} | first }} {{ {'a': 1, 'b': 2} | last }}"),
        ("string", "{{ 1.0 | string }} {{ none | string }} {{ [1, 'a'] | string }} {{ (1.0 | string) | length }}"),
        ("int", "{{ '42' | int }} {{ '3.9' | int }} {{ 'abc' | int }} {{ 'abc' | int(7) }} {{ 3.9 | int }} {{ -3.9 | int }} {{ true | int }}"),
        ("int-strings", "{{ '1e3' | int }} {{ ' 42 ' | int }} {{ '4_2' | int }} {{ '0x1A' | int(0, 16) }} {{ '101' | int(base=2) }} {{ none | int }}"),
        ("float", "{{ '1.5' | float }} {{ '1e3' | float }} {{ 'x' | float }} {{ 3 | float }} {{ 'inf' | float }} {{ 'x' | float(2.5) }} {{ '-0' | float }}"),
        ("abs", "{{ -3 | abs }} {{ -2.5 | abs }} {{ -0.0 | abs }} {{ 4 | abs }}"),
        ("round", "{{ 2.5 | round }} {{ 3.5 | round }} {{ 2.675 | round(2) }} {{ 1.23456 | round(3) }} {{ -0.5 | round }}"),
        ("round-methods", "{{ 1.5 | round(0, 'floor') }} {{ -1.5 | round(0, 'ceil') }} {{ 1.21 | round(1, 'ceil') }} {{ 1.29 | round(1, method='floor') }}"),
        ("round-int", "{{ 7 | round }} {{ 7 | round(2) }} {{ 7 | round(0, 'floor') }} {{ 15 | round(-1) }} {{ 25 | round(-1) }}"),
        ("round-negative-precision", "{{ 1234.5 | round(-2) }} {{ 1250.0 | round(-2) }}"),
        ("replace", "{{ 'a-b-c' | replace('-', '+') }} {{ 'aaa' | replace('a', 'b', 2) }} {{ 'ab' | replace('', '-') }} {{ '\u65e5\u672c' | replace('\u672c', '\u00e9') }}"),
        ("reverse", "{{ 'abc' | reverse }} {{ [1, 2, 3] | reverse | list }} {{ range(3) | reverse | join }} {{ 'e\u0301x' | reverse | tojson }}"),
        ("sort", "{{ [3, 1, 2] | sort }} {{ [3, 1, 2] | sort(reverse=true) }} {{ [1.5, 1, -2, true] | sort }}"),
        ("sort-strings-case", "{{ ['b', 'A', 'a', 'B'] | sort }} {{ ['b', 'A', 'a', 'B'] | sort(case_sensitive=true) }}"),
        ("sort-attribute", "{{ users | sort(attribute='age') | map(attribute='name') | join(',') }} {{ users | sort(attribute='name', reverse=true) | map(attribute='name') | join(',') }}"),
        ("sort-dotted-attribute", "{{ rows | sort(attribute='meta.rank') | map(attribute='id') | list }}"),
        ("sort-index-attribute", "{{ [[2, 'b'], [1, 'a'], [3, 'c']] | sort(attribute='0') | map('last') | join }}"),
        ("sort-multi-attribute", "{{ users | sort(attribute='age,name') | map(attribute='name') | join(',') }}"),
        ("unique", "{{ ['a', 'A', 'b', 'a'] | unique | list }} {{ ['a', 'A', 'b'] | unique(case_sensitive=true) | list }} {{ [1, 1.0, true, 2] | unique | list }}"),
        ("unique-attribute", "{{ users | unique(attribute='age') | map(attribute='name') | list }}"),
        ("map-filter", "{{ ['a', 'b'] | map('upper') | list }} {{ [1.26, 2.5] | map('round', 1) | list }} {{ ['1', 'x'] | map('int') | list }}"),
        ("map-attribute", "{{ users | map(attribute='name') | list }} {{ users | map(attribute='email', default='-') | list }}"),
        ("map-attribute-dotted", "{{ rows | map(attribute='meta.rank') | list }}"),
        ("select-reject", "{{ range(10) | select('odd') | list }} {{ range(10) | reject('even') | list }} {{ range(10) | select('divisibleby', 3) | list }}"),
        ("select-no-test", "{{ [0, 1, '', 'a', none, [], [0]] | select | list }} {{ [0, 1, ''] | reject | list }}"),
        ("select-tests", "{{ [1, 'a', none, 2.5, true] | select('number') | list }} {{ [1, 'a', none] | select('string') | list }} {{ [1, 'a', none] | reject('none') | list }}"),
        ("select-compare", "{{ [1, 2, 3, 4] | select('>', 2) | list }} {{ [1, 2, 3] | select('==', 2) | list }} {{ [1, 2, 3] | reject('in', [1, 3]) | list }} {{ [1, 2, 3] | select('lessthan', 3) | list }}"),
        ("selectattr", "{{ users | selectattr('admin') | map(attribute='name') | list }} {{ users | rejectattr('admin') | map(attribute='name') | list }}"),
        ("selectattr-test", "{{ users | selectattr('age', 'gt', 30) | map(attribute='name') | list }} {{ users | selectattr('email', 'defined') | list | length }} {{ users | rejectattr('email', 'undefined') | list | length }}"),
        ("selectattr-equalto", "{{ messages | selectattr('role', 'equalto', 'user') | map(attribute='content') | join('|') }}"),
        ("selectattr-dotted", "{{ rows | selectattr('meta.rank', 'le', 2) | map(attribute='id') | list }}"),
        ("indent", "[{{ 'a\nb\n\nc' | indent }}]"),
        ("indent-first-blank", "[{{ 'a\nb\n\nc\n' | indent(2, true, true) }}]"),
        ("indent-keywords", "[{{ 'a\n\nb' | indent(width=3, first=true) }}]"),
        ("indent-string-width", "[{{ 'a\nb' | indent('> ', first=true) }}]"),
        ("indent-single-line", "[{{ 'abc' | indent(4) }}]"),
        ("indent-crlf", "[{{ 'a\r\nb\rc' | indent(1) | tojson }}]"),
        ("safe", "{{ '<b>&</b>' | safe }} {{ ('<' | safe) ~ '>' }}"),
        ("escape", "{{ '<a href=\"x\">&\\'</a>' | escape }} {{ '<>' | e }} {{ 1 | e }} {{ none | e }}"),
        ("escape-twice", "{{ '<' | e | e }} {{ ('<' | e) ~ '<' }} {{ ('<' | e) + '<' }}"),
        ("escape-length", "{{ '<&>' | e | length }} {{ '<&>' | e | upper }}"),
        ("dictsort", "{{ {'b': 1, 'A': 2, 'a': 3} | dictsort }} {{ {'b': 1, 'A': 2, 'a': 3} | dictsort(true) }}"),
        ("dictsort-value", "{{ {'x': 3, 'y': 1, 'z': 2} | dictsort(by='value') }} {{ {'x': 3, 'y': 1} | dictsort(reverse=true) }}"),
        ("sum", "{{ [1, 2, 3] | sum }} {{ [0.1, 0.2, 0.3] | sum }} {{ [1, 2] | sum(start=10) }} {{ [] | sum }} {{ [true, true] | sum }}"),
        ("sum-attribute", "{{ users | sum(attribute='age') }} {{ rows | sum(attribute='meta.rank') }}"),
        ("min-max", "{{ [3, 1, 2] | min }} {{ [3, 1, 2] | max }} {{ [1, 2.5] | max }} {{ 'hello' | max }}"),
        ("min-max-case", "{{ ['b', 'A', 'c'] | min }} {{ ['b', 'A', 'c'] | max }} {{ ['b', 'A', 'c'] | min(case_sensitive=true) }}"),
        ("min-max-attribute", "{{ users | min(attribute='age') }} {{ (users | max(attribute='age')).name }}"),
        ("min-max-empty", "[{{ [] | min }}][{{ [] | max }}]"),
        ("wordcount", "{{ 'hello world' | wordcount }} {{ \"it's a-b_c d\" | wordcount }} {{ '\u65e5\u672c\u8a9e \u30c6\u30ad\u30b9\u30c8' | wordcount }} {{ '' | wordcount }} {{ '  ..  ' | wordcount }}"),
        ("center", "[{{ 'x' | center(5) }}][{{ 'ab' | center(5) }}][{{ 'abc' | center(2) }}][{{ 'ab' | center(6) }}]"),
        ("center-default", "[{{ 'mid' | center }}]"),
        ("tojson-default", "{{ {'a': [1, 2.0, 'x', none, true]} | tojson }}"),
        ("filter-chain", "{{ '  Hello World  ' | trim | lower | replace('o', '0') | title }}"),
        ("filter-block", "{% filter upper %}abc {{ 'def' }}{% endfilter %}"),
        ("filter-block-chain", "{% filter trim | title %}  two words  {% endfilter %}"),
        ("attr-filter", "{{ d | attr('present') }}|{{ d | attr('missing') }}|"),
        ("batch-slice", "{{ range(5) | batch(2) | list }} {{ range(5) | batch(2, 'x') | list }} {{ range(5) | slice(2) | list }}"),
        ("groupby", "{% for g in users | groupby('admin') %}{{ g.grouper }}:{{ g.list | map(attribute='name') | join(',') }};{% endfor %}"),
        ("truncate", "{{ 'one two three four five six' | truncate(12) }}|{{ 'short' | truncate(12) }}|{{ 'abcdefghijklmnopq' | truncate(9, true, '~') }}"),
        ("format-filter", "{{ '%s-%s' | format(1, 'b') }}"),
        ("pprint-like", "{{ {'b': 1, 'a': [1, 2]} | pprint }}"),
        ("striptags-urlencode", "{{ '<p>a <b>b</b></p>' | striptags }} {{ 'a b&c' | urlencode }}"),
    ]
    users = {"users": [{"name": "ann", "age": 31, "admin": True, "email": "a@x"},
                       {"name": "Bob", "age": 25, "admin": False},
                       {"name": "cid", "age": 31, "admin": False, "email": None},
                       {"name": "Dee", "age": 40, "admin": True}],
             "rows": [{"id": "r1", "meta": {"rank": 3}}, {"id": "r2", "meta": {"rank": 1}}, {"id": "r3", "meta": {"rank": 2}}],
             "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"},
                          {"role": "user", "content": "bye"}],
             "d": {"present": "yes"}}
    for sid, tpl in filt:
        S("filt-" + sid, tpl, users)

    # Tests.
    S("test-defined", "{{ x is defined }} {{ y is defined }} {{ y is undefined }} {{ d.k is defined }} {{ d.z is defined }} {{ none is defined }}",
      {"x": 0, "d": {"k": None}})
    S("test-none", "{{ none is none }} {{ x is none }} {{ missing is none }} {{ 0 is none }}", {"x": None})
    S("test-string", "{{ 'a' is string }} {{ 1 is string }} {{ ('<' | e) is string }} {{ none is string }} {{ ['a'] is string }}")
    S("test-number", "{{ 1 is number }} {{ 1.5 is number }} {{ true is number }} {{ '1' is number }} {{ none is number }}")
    S("test-integer-float", "{{ 1 is integer }} {{ true is integer }} {{ 1.0 is integer }} {{ 1.0 is float }} {{ 1 is float }} {{ x is integer }} {{ y is float }}",
      {"x": 5, "y": 5.0})
    S("test-boolean", "{{ true is boolean }} {{ 1 is boolean }} {{ none is boolean }} {{ x is boolean }}", {"x": False})
    S("test-true-false", "{{ true is true }} {{ 1 is true }} {{ false is false }} {{ 0 is false }} {{ none is false }} {{ x is true }}", {"x": True})
    S("test-mapping", "{{ {} is mapping }} {{ [] is mapping }} {{ namespace() is mapping }} {{ x is mapping }} {{ 'a' is mapping }}",
      {"x": {"a": 1}})
    S("test-iterable", "{{ 'a' is iterable }} {{ [] is iterable }} {{ {} is iterable }} {{ 1 is iterable }} {{ range(2) is iterable }} {{ none is iterable }} {{ missing is iterable }}")
    S("test-sequence", "{{ 'a' is sequence }} {{ [] is sequence }} {{ {} is sequence }} {{ 1 is sequence }} {{ (1,) is sequence }} {{ range(2) is sequence }}")
    S("test-callable", "{{ raise_exception is callable }} {{ range is callable }} {{ namespace is callable }} {{ 'x'.upper is callable }} {{ 'x' is callable }} {{ strftime_now is callable }} {{ dict is callable }}")
    S("test-odd-even", "{{ 3 is odd }} {{ 3 is even }} {{ -2 is even }} {{ 0 is even }} {{ -3 is odd }}")
    S("test-divisibleby", "{{ 9 is divisibleby 3 }} {{ 9 is divisibleby(4) }} {{ 0 is divisibleby 5 }} {{ -6 is divisibleby 3 }}")
    S("test-comparisons", "{{ 1 is eq 1 }} {{ 1 is equalto 2 }} {{ 1 is ne 2 }} {{ 1 is lt 2 }} {{ 2 is le 2 }} {{ 3 is gt 2 }} {{ 2 is ge 3 }} {{ 3 is greaterthan 1 }} {{ 1 is lessthan 1 }}")
    S("test-in", "{{ 1 is in [1, 2] }} {{ 'a' is in 'abc' }} {{ 'k' is in {'k': 1} }} {{ 3 is in range(3) }}")
    S("test-sameas", "{{ none is sameas none }} {{ true is sameas true }} {{ 1 is sameas true }} {{ x is sameas x }} {{ [] is sameas [] }}",
      {"x": [1]})
    S("test-lower-upper", "{{ 'abc' is lower }} {{ 'abc1' is lower }} {{ '123' is lower }} {{ 'ABC' is upper }} {{ 'AbC' is upper }} {{ '\u00c9T\u00c9' is upper }} {{ '' is lower }}")
    S("test-not", "{{ 1 is not string }} {{ not 1 is string }} {{ x is not defined }}")
    S("test-in-filter-args", "{{ [1, 2, 3] | select('in', [2, 3]) | list }} {{ ['a', 'b'] | reject('sameas', 'a') | list }}")
    S("test-escaped-filtered", "{{ 'x' is escaped }} {{ ('x' | e) is escaped }} {{ 'upper' is filter }} {{ 'odd' is test }} {{ 'nope' is filter }}")

    # String methods (Python's, called on str).
    strm = [
        ("startswith", "{{ 'hello'.startswith('he') }} {{ 'hello'.startswith(('x', 'h')) }} {{ 'hello'.startswith('') }} {{ 'hello'.startswith('l', 2) }}"),
        ("endswith", "{{ 'a.py'.endswith('.py') }} {{ 'a.py'.endswith(('.js', '.ts')) }} {{ '\u65e5\u672c'.endswith('\u672c') }}"),
        ("strip", "[{{ '  x \n'.strip() }}][{{ 'xxaxx'.strip('x') }}][{{ '\u3000\u00a0y\u2028'.strip() }}][{{ 'abcba'.strip('ab') }}]"),
        ("lstrip-rstrip", "[{{ '\n\nx\n\n'.lstrip('\\n') }}][{{ '\n\nx\n\n'.rstrip('\\n') }}][{{ '  x  '.lstrip() }}][{{ '  x  '.rstrip() }}][{{ 'x.!?'.rstrip('.!?') }}]"),
        ("split-whitespace", "{{ '  a b\t\nc\u3000d\x1ce  '.split() }}"),
        ("split-sep", "{{ 'a,b,,c'.split(',') }} {{ 'a,b,,c'.split(',', 1) }} {{ ''.split(',') }} {{ ''.split() }}"),
        ("split-maxsplit-none", "{{ ' a b c '.split(none, 1) }} {{ 'a b c'.split(maxsplit=1) }}"),
        ("split-multichar", "{{ 'a<sep>b<sep>'.split('<sep>') }} {{ 'x</think>y</think>z'.split('</think>')[-1] }}"),
        ("rsplit", "{{ 'a,b,c'.rsplit(',', 1) }} {{ '  a b  '.rsplit() }} {{ 'a.b.c'.rsplit('.') }}"),
        ("upper-lower", "{{ 'Stra\u00dfe'.upper() }} {{ '\u0130'.lower() | length }} {{ '\u03a3\u039f\u03a3'.lower() }}"),
        ("title", "{{ \"hello world's\".title() }} {{ 'x1y 2z'.title() }} {{ '\u00e9cole'.title() }}"),
        ("capitalize", "{{ 'hELLO'.capitalize() }} {{ '\u00dfa'.capitalize() }}"),
        ("replace", "{{ 'aaa'.replace('a', 'b') }} {{ 'aaa'.replace('a', 'b', 1) }} {{ 'ab'.replace('', '.') }}"),
        ("find", "{{ 'hello'.find('l') }} {{ 'hello'.find('z') }} {{ 'h\u00e9llo'.find('l') }} {{ '\U0001F600x'.find('x') }} {{ 'hello'.rfind('l') }}"),
        ("count", "{{ 'banana'.count('a') }} {{ 'banana'.count('an') }} {{ 'aaa'.count('aa') }} {{ 'abc'.count('') }}"),
        ("splitlines", "{{ 'a\nb\r\nc\rd\x0be\x1cf\u2028g\u0085h'.splitlines() }}"),
        ("splitlines-keepends", "{{ 'a\n\nb\n'.splitlines() }} {{ 'a\nb'.splitlines(true) }} {{ ''.splitlines() }}"),
        ("join", "{{ '-'.join(['a', 'b', 'c']) }} {{ ''.join('xyz' | list | reverse) }} {{ ', '.join(d.keys()) }}"),
        ("chained", "{{ '  <think>x</think>  '.strip().split('</think>')[0].lstrip('<think>') }}"),
        ("isdigit-etc", "{{ '123'.isdigit() }} {{ 'abc'.isalpha() }} {{ ' '.isspace() }} {{ 'a1'.isalnum() }}"),
        ("zfill-just", "[{{ '7'.zfill(3) }}][{{ 'a'.ljust(3) }}][{{ 'a'.rjust(3, '*') }}]"),
        ("method-on-context", "{{ s.strip().upper() }} {{ s.split('|') | length }}"),
    ]
    for sid, tpl in strm:
        S("str-" + sid, tpl, {"d": {"k1": 1, "k2": 2}, "s": "  a|b|c  "})

    # Dict methods.
    dctx = {"d": {"b": 2, "a": 1, "n": None, "\u00e9": [1]}}
    S("dict-items", "{% for k, v in d.items() %}{{ k }}:{{ v }};{% endfor %}", dctx)
    S("dict-keys-values", "{{ d.keys() | list }} {{ d.values() | list }} {{ d.keys() | length }}", dctx)
    S("dict-get", "{{ d.get('a') }} {{ d.get('zz') }} {{ d.get('zz', 'dflt') }} {{ d.get('n', 'dflt') }} {{ d.get('zz') is none }}", dctx)
    S("dict-in-keys", "{{ 'a' in d.keys() }} {{ 1 in d.values() }} {{ d.items() | list | length }}", dctx)
    S("dict-iterate-keys", "{% for k in d %}{{ k }},{% endfor %}", dctx)
    S("dict-attr-vs-item", "{{ d.a }} {{ d['a'] }} {{ d.items is callable }} {{ d['items'] }}", {"d": {"a": 1, "items": "field"}})
    S("dict-key-shadows-method", "{{ d.keys is callable }}|{{ d.get is string }}|{{ d['keys'] }}|{{ d.other }}", {"d": {"keys": "k", "get": "g", "other": "o"}})
    S("dict-integer-keys", "{{ d[1] }} {{ d['1'] }}", {"d": {"1": "one"}})

    # Attribute and item access.
    S("access-attr-item", "{{ m.role }} {{ m['role'] }} {{ m.tool_calls }}|{{ m['missing'] }}|{{ m.content.text }}",
      {"m": {"role": "user", "content": {"text": "t"}}})
    S("access-list-index", "{{ l[0] }} {{ l[-1] }} {{ l[1][0] }} {{ l.0 }} {{ l[10] }}|{{ l[-10] }}|", {"l": [1, [2, 3], "x"]})
    S("access-slicing", "{{ l[1:] }} {{ l[:-1] }} {{ l[::-1] }} {{ l[::2] }} {{ l[-2:] }} {{ l[5:1:-2] }} {{ l[1:1] }} {{ l[10:] }}",
      {"l": [0, 1, 2, 3, 4, 5, 6]})
    S("access-string-slicing", "{{ s[::-1] }} {{ s[1:3] }} {{ s[-2:] }} {{ s[0] }} {{ s[-1] }} {{ s[::3] }}",
      {"s": "h\u00e9llo w\u00f6rld"})
    S("access-tuple-slicing", "{{ (1, 2, 3)[::-1] }} {{ (1, 2, 3)[1:] }} {{ (1, 2, 3)[0] }}")
    S("access-none-attr", "[{{ none.x }}][{{ n.x }}]", {"n": None})
    S("access-int-attr", "[{{ (5).real }}][{{ x.y }}]", {"x": 5})
    S("access-dynamic-key", "{% set k = 'role' %}{{ m[k] }} {{ m[k ~ ''] }}", {"m": {"role": "user"}})
    S("access-string-methods-dict", "{{ messages[-1]['content'].strip() }}", {"messages": [{"content": "  x  "}]})

    # Unicode: indexing and slicing count code points.
    uctx = {"cjk": "\u65e5\u672c\u8a9e\u306e\u30c6\u30ad\u30b9\u30c8", "emoji": "a\U0001F600b\U0001F44D\U0001F3FDc",
            "zwj": "\U0001F468\u200d\U0001F469\u200d\U0001F467", "comb": "e\u0301a\u0308", "mixed": "Caf\u00e9 \u00fcber \u4e2d\u6587"}
    S("uni-index", "{{ cjk[0] }}{{ cjk[-1] }} {{ emoji[1] }} {{ emoji[3] }} {{ emoji[4] }} {{ comb[0] }} {{ comb[1] | tojson }}", uctx)
    S("uni-length", "{{ cjk | length }} {{ emoji | length }} {{ zwj | length }} {{ comb | length }}", uctx)
    S("uni-slices", "{{ cjk[1:4] }} {{ cjk[::-1] }} {{ emoji[::-1] }} {{ zwj[::-1] | tojson }} {{ comb[::-1] | tojson }} {{ mixed[3:8] }}", uctx)
    S("uni-in", "{{ '\u672c' in cjk }} {{ '\U0001F600' in emoji }} {{ '\u200d' in zwj }} {{ '\u0301' in comb }}", uctx)
    S("uni-methods", "{{ mixed.upper() }} {{ mixed.find('\u4e2d') }} {{ mixed.split() }} {{ cjk.count('\u30c6') }}", uctx)
    S("uni-loop-chars", "{% for c in emoji %}[{{ c }}]{% endfor %}", uctx)
    S("uni-tojson", "{{ cjk | tojson }} {{ emoji | tojson }} {{ emoji | tojson(ensure_ascii=true) }}", uctx)

    # tojson as transformers defines it: json.dumps(x, ensure_ascii=False, indent, separators, sort_keys).
    jctx = {"nested": {"z": [1, 2.0, 1e20, 1e-07, -0.0, 0.1], "a": {"\u540d": "\u00e9\U0001F600", "t": True, "n": None},
                       "m": [], "e": {}},
            "tricky": "<script>&amp; 'q' \"dq\" \\ / \x00\x01\x08\t\n\x0b\x0c\r\x1b\x1f\x7f \u0085\u00a0\u2028\u2029\ufeff",
            "big": 9007199254740993, "flt": 3.0}
    S("json-nested", "{{ nested | tojson }}", jctx)
    S("json-indent-2", "{{ nested | tojson(indent=2) }}", jctx)
    S("json-indent-0", "{{ [1, [2, {}], {'a': []}] | tojson(indent=0) }}")
    S("json-indent-tab", "{{ {'a': [1]} | tojson(indent='\t') }}")
    S("json-sort-keys", "{{ nested | tojson(sort_keys=true) }}", jctx)
    S("json-sort-keys-indent", "{{ {'b': {'y': 1, 'x': 2}, 'a': [{'d': 1, 'c': 2}]} | tojson(indent=1, sort_keys=true) }}")
    S("json-tricky-string", "{{ tricky | tojson }}", jctx)
    S("json-tricky-ascii", "{{ tricky | tojson(ensure_ascii=true) }}", jctx)
    S("json-separators", "{{ {'a': [1, 2], 'b': none} | tojson(separators=(',', ':')) }}")
    S("json-scalars", "{{ 1 | tojson }} {{ 1.0 | tojson }} {{ flt | tojson }} {{ big | tojson }} {{ none | tojson }} {{ true | tojson }} {{ 'x' | tojson }} {{ (1e300 * 1e300) | tojson }}", jctx)
    S("json-tuple", "{{ (1, (2, 'x')) | tojson }} {{ {'t': (none,)} | tojson }}")
    S("json-markup", "{{ ('<a>' | e) | tojson }}")
    S("json-non-string-keys", "{{ {1: 'a', none: 'b', 1.5: 'c', true: 'd'} | tojson }}")
    S("json-empty-indent", "{{ [] | tojson(indent=2) }} {{ {} | tojson(indent=2) }} {{ [[]] | tojson(indent=2) }}")
    S("json-indent-then-indent", "{{ {'a': {'b': 1}} | tojson(indent=2) | indent(4) }}")
    S("json-items", "{{ {'a': 1} | items | list | tojson }} {{ {'a': 1} | dictsort | tojson }}")
    S("json-messages", "{{ messages | tojson }}", {"messages": [{"role": "user", "content": "\u4f60\u597d <|im_end|>"},
                                                               {"role": "assistant", "content": None, "tool_calls": [
                                                                   {"function": {"name": "f", "arguments": {"x": 1.5, "y": [True]}}}]}]})

    # Loops.
    S("loop-vars", "{% for x in 'abc' %}{{ loop.index }}{{ loop.index0 }}{{ loop.revindex }}{{ loop.revindex0 }}{{ loop.first }}{{ loop.last }}{{ loop.length }} {% endfor %}")
    S("loop-previtem-nextitem", "{% for x in [1, 2, 3] %}({{ loop.previtem }},{{ loop.nextitem }}){% endfor %}")
    S("loop-previtem-defined", "{% for x in [1, 2] %}{{ loop.previtem is defined }}{{ loop.nextitem is defined }} {% endfor %}")
    S("loop-cycle", "{% for x in range(5) %}{{ loop.cycle('a', 'b', 'c') }}{% endfor %}")
    S("loop-changed", "{% for x in [1, 1, 2, 2, 1] %}{{ loop.changed(x) }} {% endfor %}")
    S("loop-depth-recursive", "{% for n in tree recursive %}{{ n.name }}@{{ loop.depth }}/{{ loop.depth0 }}{% if n.children %}({{ loop(n.children) }}){% endif %};{% endfor %}",
      {"tree": [{"name": "a", "children": [{"name": "b", "children": [{"name": "c"}]}, {"name": "d"}]}, {"name": "e"}]})
    S("loop-nested", "{% for a in [1, 2] %}{% set outer = loop %}{% for b in 'xy' %}{{ outer.index }}{{ loop.index }}{{ a }}{{ b }}{{ loop.length }} {% endfor %}{% endfor %}")
    S("loop-nested-loop-shadow", "{% for a in [1, 2] %}{% for b in [3] %}{{ loop.index }}{% endfor %}{{ loop.index }}{% endfor %}")
    S("loop-else-empty", "{% for x in [] %}x{% else %}empty{% endfor %}")
    S("loop-else-nonempty", "{% for x in [1] %}x{% else %}empty{% endfor %}")
    S("loop-else-filtered-out", "{% for x in [1, 3] if x is even %}x{% else %}none even{% endfor %}")
    S("loop-else-after-break", "{% for x in [1, 2] %}{% break %}{% else %}E{% endfor %}|")
    S("loop-else-after-late-break", "{% for x in [1, 2] %}{{ x }}{% if x == 2 %}{% break %}{% endif %}{% else %}E{% endfor %}|")
    S("loop-else-after-continue", "{% for x in [1] %}{% continue %}{% else %}E{% endfor %}|")
    S("loop-else-continue-then-full", "{% for x in [1, 2] %}{% if x == 2 %}{% continue %}{% endif %}{{ x }}{% else %}E{% endfor %}|")
    S("loop-filter-loopvars", "{% for x in range(10) if x is odd %}{{ loop.index }}:{{ x }}/{{ loop.length }}{{ '.' if loop.last }} {% endfor %}")
    S("loop-filter-nextitem", "{% for x in range(6) if x % 3 == 0 %}{{ x }}>{{ loop.nextitem }} {% endfor %}")
    S("loop-break", "{% for x in range(10) %}{% if x == 3 %}{% break %}{% endif %}{{ x }}{% endfor %}")
    S("loop-continue", "{% for x in range(6) %}{% if x is odd %}{% continue %}{% endif %}{{ x }}{% endfor %}")
    S("loop-continue-loopvars", "{% for x in range(4) %}{% if loop.first %}{% continue %}{% endif %}{{ loop.index }}{{ loop.last }} {% endfor %}")
    S("loop-break-nested", "{% for a in range(3) %}{% for b in range(3) %}{% if b > a %}{% break %}{% endif %}{{ a }}{{ b }} {% endfor %}{% endfor %}")
    S("loop-tuple-unpack", "{% for a, b in [[1, 2], [3, 4], (5, 6)] %}{{ a + b }} {% endfor %}")
    S("loop-tuple-unpack-items", "{% for k, v in d | dictsort %}{{ k }}={{ v }} {% endfor %}", {"d": {"b": 1, "a": 2}})
    S("loop-unpack-strings", "{% for a, b in ['xy', 'zw'] %}{{ b }}{{ a }}{% endfor %}")
    S("loop-over-string", "{% for c in 'h\u00e9' %}[{{ c }}]{% endfor %}")
    S("loop-over-undefined", "{% for x in missing %}x{% else %}nothing{% endfor %}")
    S("loop-over-dict-sorted", "{% for k in {'b': 1, 'a': 2} | sort %}{{ k }}{% endfor %}")
    S("loop-reverse-messages", "{% for m in messages[::-1] %}{{ loop.index0 }}{{ m.role[0] }}{% endfor %}",
      {"messages": [{"role": "system"}, {"role": "user"}, {"role": "assistant"}]})
    S("loop-index-arith", "{% for m in messages %}{{ (messages | length - 1) - loop.index0 }}{% endfor %}",
      {"messages": [1, 2, 3, 4]})
    S("loop-loop-outside", "{{ loop is defined }}")
    S("loop-range-args", "{{ range(4) | list }} {{ range(2, 5) | list }} {{ range(10, 0, -4) | list }} {{ range(0) | list }} {{ range(5, 2) | list }} {{ range(-3, 3, 2) | list }}")
    S("loop-range-slice", "{{ range(10)[::-3] | list }} {{ range(10)[2] }} {{ range(10) | length }}")

    # Assignments and scope.
    S("set-plain", "{% set x = 1 %}{% set y = x + 1 %}{{ x }}{{ y }}")
    S("set-tuple", "{% set a, b = 1, 2 %}{{ a }}{{ b }}{% set c, d = [3, 4] %}{{ c }}{{ d }}{% set e, f = 'xy' %}{{ f }}{{ e }}")
    S("set-tuple-parens", "{% set (a, b) = (b_in, a_in) %}{{ a }}{{ b }}", {"a_in": "A", "b_in": "B"})
    S("set-namespace", "{% set ns = namespace(x=0, l=[]) %}{% for i in range(3) %}{% set ns.x = ns.x + i %}{% set ns.l = ns.l + [i] %}{% endfor %}{{ ns.x }} {{ ns.l }}")
    S("set-namespace-new-attr", "{% set ns = namespace() %}{% set ns.y = 'new' %}{{ ns.y }}")
    S("set-namespace-from-dict", "{% set ns = namespace({'a': 1}, b=2) %}{{ ns.a }}{{ ns.b }}")
    S("set-in-for-not-visible", "{% set x = 'outer' %}{% for i in [1] %}{% set x = 'inner' %}{{ x }} {% endfor %}{{ x }}")
    S("set-in-if-visible", "{% if true %}{% set x = 'from if' %}{% endif %}{{ x }}")
    S("set-in-for-new-name", "{% for i in [1, 2] %}{% set seen = i %}{% endfor %}[{{ seen }}]")
    S("set-loop-var-after", "{% for i in [1, 2] %}{% endfor %}[{{ i }}]")
    S("set-block", "{% set x %}a {{ 1 + 1 }} b{% endset %}[{{ x }}] {{ x | length }}")
    S("set-block-filter", "{% set x | upper | trim %}  hello {{ 'you' }}  {% endset %}[{{ x }}]")
    S("set-block-in-loop", "{% for i in [1, 2] %}{% set x %}<{{ i }}>{% endset %}{{ x }}{% endfor %}")
    S("set-overwrite-context", "{{ v }}{% set v = 'changed' %}{{ v }}", {"v": "orig"})
    S("set-list-alias", "{% set a = [1] %}{% set b = a %}{% set a = a + [2] %}{{ a }} {{ b }}")
    S("set-with-block", "{% with x = 1, y = 2 %}{{ x + y }}{% endwith %}[{{ x }}]")
    S("set-macro-sees-later-global", "{% set x = 1 %}{% macro m() %}{{ x }}{% endmacro %}{% set x = 2 %}{{ m() }}")

    # Macros.
    S("macro-defaults", "{% macro m(a, b='B', c=none) %}{{ a }}{{ b }}{{ c }}{% endmacro %}{{ m(1) }} {{ m(1, 2) }} {{ m(1, c=3) }} {{ m(a=0) }}")
    S("macro-missing-arg", "{% macro m(a, b) %}[{{ a }}][{{ b }}]{% endmacro %}{{ m(1) }}")
    S("macro-varargs-kwargs", "{% macro m(a) %}{{ a }}{{ varargs }}{{ kwargs }}{% endmacro %}{{ m(1, 2, 3, k='v') }}")
    S("macro-call-block", "{% macro wrap(tag) %}<{{ tag }}>{{ caller() }}</{{ tag }}>{% endmacro %}{% call wrap('b') %}inner {{ 1 + 1 }}{% endcall %}")
    S("macro-call-args", "{% macro each(xs) %}{% for x in xs %}{{ caller(x) }}{% endfor %}{% endmacro %}{% call(item) each([1, 2]) %}[{{ item }}]{% endcall %}")
    S("macro-recursive", "{% macro fact(n) %}{% if n <= 1 %}1{% else %}{{ n * fact(n - 1) | int }}{% endif %}{% endmacro %}{{ fact(5) }}")
    S("macro-result-filtered", "{% macro m() %}  hi  {% endmacro %}[{{ m() | trim | upper }}] {{ m() | length }}")
    S("macro-in-expression", "{% macro m(x) %}{{ x * 2 }}{% endmacro %}{{ m(2) ~ m('a') }} {{ (m(3) | int) + 1 }}")
    S("macro-context-access", "{% macro m() %}{{ ctxvar }}{% endmacro %}{{ m() }}", {"ctxvar": "from context"})
    S("macro-namespace-arg", "{% macro bump(ns) %}{% set ns.n = ns.n + 1 %}{% endmacro %}{% set s = namespace(n=0) %}{{ bump(s) }}{{ bump(s) }}{{ s.n }}")
    S("macro-whitespace", "{% macro m() -%}\n  body\n{%- endmacro %}\n[{{ m() }}]")
    S("macro-caller-defined", "{% macro m() %}{{ caller is defined }}{% endmacro %}{{ m() }}")

    # Undefined behaviour (jinja2's default Undefined).
    S("undef-print", "[{{ missing }}]")
    S("undef-defined-test", "{{ missing is defined }} {{ missing is undefined }}")
    S("undef-default", "{{ missing | default('d') }}")
    S("undef-concat", "[{{ missing ~ 'a' }}]")
    S("undef-missing-key", "[{{ d.nope }}][{{ d['nope'] }}][{{ d.nope is defined }}]", {"d": {"k": 1}})
    S("undef-truthiness", "{{ 'T' if missing else 'F' }} {{ not missing }} {{ missing or 'alt' }} {{ missing and 'x' }}|")
    S("undef-length-list-upper", "{{ missing | length }} {{ missing | list }} [{{ missing | upper }}] [{{ missing | string }}]")
    S("undef-eq", "{{ missing == none }} {{ missing == missing2 }} {{ missing != 1 }}")
    S("undef-in", "{{ 'a' in missing }}")
    S("undef-none-attr", "[{{ none.x }}] {{ none.x is defined }}")
    S("undef-list-out-of-range", "[{{ [1][5] }}] {{ [1][5] is defined }} [{{ 'abc'[10] }}]")
    S("undef-ifexpr", "[{{ 'x' if false }}] {{ ('x' if false) is none }}")
    S("undef-join-with", "{{ [missing, 'a', missing2] | join(',') }}")
    S("undef-first-of-empty", "{{ ([] | first) is defined }}")
    S("undef-unhashable-key", "[{{ {'a': 1}[[1]] }}]")
    S("undef-int-bad-base-falls-back", "{{ '12' | int(0, 1) }}")

    # Globals.
    S("glob-range", "{{ range(3) | join }} {{ range(1, 3) | join }} {{ range(1, 8, 3) | join }}")
    S("glob-namespace", "{% set ns = namespace(a=1) %}{{ ns.a }} {{ ns.b is defined }}")
    S("glob-dict", "{{ dict(a=1, b='x') | tojson }} {{ dict() | length }} {{ dict(a=1).a }}")
    S("glob-raise-exception", "before{{ raise_exception('Custom failure: ' ~ 42) }}after")
    S("glob-raise-in-if", "{% if x > 1 %}{{ raise_exception('x too big') }}{% endif %}ok", {"x": 2})
    S("glob-raise-not-taken", "{% if x > 1 %}{{ raise_exception('x too big') }}{% endif %}ok", {"x": 1})
    S("glob-lipsum-cycler-joiner", "{% set j = joiner(', ') %}{% for x in 'ab' %}{{ j() }}{{ x }}{% endfor %} {% set c = cycler('x', 'y') %}{{ c.next() }}{{ c.next() }}{{ c.next() }}")

    # Combinations: small chat-template fragments.
    chat = {"messages": [{"role": "system", "content": " Be brief. "}, {"role": "user", "content": "Hi \u4f60\u597d"},
                         {"role": "assistant", "content": "<think>\nhm\n</think>\n\nHello!"},
                         {"role": "user", "content": "Again?"}],
            "add_generation_prompt": True, "bos_token": "<s>", "eos_token": "</s>"}
    S("combo-chatml", "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}", chat)
    S("combo-system-split", "{%- if messages[0].role == 'system' %}{% set sys = messages[0].content | trim %}{% set rest = messages[1:] %}{% else %}{% set rest = messages %}{% endif %}[{{ sys }}]{{ rest | length }}", chat)
    S("combo-alternation-check", "{%- for m in messages | rejectattr('role', 'eq', 'system') %}{% if (m.role == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('roles must alternate') }}{% endif %}{% endfor %}ok", chat)
    S("combo-alternation-fails", "{%- for m in messages %}{% if (m.role == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('roles must alternate') }}{% endif %}{% endfor %}ok", chat)
    S("combo-think-split", "{% for m in messages if m.role == 'assistant' %}{% set c = m.content %}{{ c.split('</think>')[0].rstrip('\\n').split('<think>')[-1].lstrip('\\n') | tojson }}|{{ c.split('</think>')[-1].lstrip('\\n') | tojson }}{% endfor %}", chat)
    S("combo-last-user-index", "{%- set ns = namespace(last=-1) %}{% for m in messages %}{% if m.role == 'user' %}{% set ns.last = loop.index0 %}{% endif %}{% endfor %}{{ ns.last }}", chat)
    S("combo-mistral-like", "{{ bos_token }}{% for m in messages if m.role != 'system' %}{% if m.role == 'user' %}[INST] {{ m.content }} [/INST]{% else %}{{ m.content }}{{ eos_token }}{% endif %}{% endfor %}", chat)
    S("combo-tool-json", "{%- for t in tools %}{{ '\\n' if not loop.first }}{{ t | tojson }}{% endfor %}",
      {"tools": [TOOLS[0], TOOLS[6]]})
    S("combo-tool-indent4", "{{ tools[1] | tojson(indent=4) }}", {"tools": [TOOLS[0], TOOLS[1]]})
    S("combo-tool-call-dict-literal", "{{ {'name': c.name, 'parameters': c.arguments} | tojson }}",
      {"c": {"name": "f", "arguments": {"q": "\u00e9", "n": [1, 2.5, None]}}})
    S("combo-content-parts", "{% for p in content %}{% if p.type == 'text' %}{{ p.text }}{% elif p.type == 'image' %}<image>{% endif %}{% endfor %}",
      {"content": [{"type": "text", "text": "look:"}, {"type": "image"}, {"type": "text", "text": "!"}]})
    S("combo-content-is-string", "{% for m in ms %}{{ 'S' if m.content is string else ('M' if m.content is mapping else ('L' if m.content is iterable else 'N')) }}{% endfor %}",
      {"ms": [{"content": "x"}, {"content": {"a": 1}}, {"content": [1]}, {"content": None}, {"content": 3}, {}]})

    # Errors raised while rendering (and a few while parsing).
    errors = [
        ("str-plus-int", "{{ 'a' + 1 }}"), ("int-plus-str", "{{ 1 + 'a' }}"), ("none-plus", "{{ none + 1 }}"),
        ("str-minus", "{{ 'abc' - 1 }}"), ("str-times-str", "{{ 'a' * 'b' }}"), ("str-pow", "{{ 'abc' ** 2 }}"),
        ("list-plus-str", "{{ [1] + 'a' }}"), ("lt-mixed", "{{ 1 < 'a' }}"), ("sort-mixed", "{{ [1, 'a'] | sort }}"),
        ("max-mixed", "{{ [1, 'a'] | max }}"), ("undefined-attr", "{{ missing.attr }}"),
        ("undefined-attr-of-key", "{{ d.nope.deeper }}"), ("undefined-plus", "{{ missing + 1 }}"),
        ("undefined-index", "{{ missing[0] }}"), ("undefined-call", "{{ missing() }}"),
        ("none-attr-attr", "{{ none.x.y }}"), ("none-call", "{{ none() }}"), ("namespace-deep", "{% set ns = namespace() %}{{ ns.x.y }}"),
        ("raise-exception", "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"),
        ("raise-exception-unicode", "{{ raise_exception('\u4e0d\u652f\u6301 \U0001F600 \"role\"') }}"),
        ("div-zero", "{{ 1 / 0 }}"), ("floordiv-zero", "{{ 1 // 0 }}"), ("mod-zero", "{{ 1 % 0 }}"),
        ("float-div-zero", "{{ 1.0 / 0 }}"), ("zero-negative-power", "{{ 0 ** -1 }}"),
        ("iterate-int", "{% for x in 5 %}{% endfor %}"), ("iterate-none", "{% for x in none %}{% endfor %}"),
        ("range-step-zero", "{{ range(1, 2, 0) }}"), ("range-too-big", "{{ range(1000000) | length }}"),
        ("slice-step-zero", "{{ [1, 2, 3][::0] }}"), ("split-empty-sep", "{{ 'abc'.split('') }}"),
        ("str-index-missing", "{{ 'abc'.index('z') }}"), ("unknown-global", "{{ int('5') }}"),
        ("unknown-method", "{{ 'abc'.nonexistent() }}"), ("list-append", "{{ [1].append(2) }}"),
        ("dict-update", "{% set d = {} %}{{ d.update({'a': 1}) }}"), ("dict-pop", "{{ {'a': 1}.pop('a') }}"),
        ("dunder-chain", "{{ ''.__class__.__mro__ }}"), ("set-attr-non-namespace", "{% set d = {} %}{% set d.x = 1 %}"),
        ("tojson-undefined", "{{ missing | tojson }}"), ("tojson-namespace", "{{ namespace(a=1) | tojson }}"),
        ("tojson-range", "{{ range(3) | tojson }}"), ("tojson-sort-mixed-keys", "{{ {1: 'a', 'b': 2} | tojson(sort_keys=true) }}"),
        ("length-none", "{{ none | length }}"), ("length-int", "{{ 5 | length }}"), ("round-string", "{{ 'a' | round }}"),
        ("join-int", "{{ 5 | join }}"), ("items-list", "{{ [1, 2] | items | list }}"), ("abs-string", "{{ 'x' | abs }}"),
        ("macro-too-many-args", "{% macro m(a) %}{% endmacro %}{{ m(1, 2) }}"),
        ("macro-unknown-kwarg", "{% macro m(a) %}{% endmacro %}{{ m(b=1) }}"),
        ("unpack-count", "{% set a, b = [1, 2, 3] %}"), ("dictsort-list", "{{ [1] | dictsort }}"),
        ("in-int", "{{ 1 in 5 }}"), ("int-in-str", "{{ 1 in 'abc' }}"),
        ("neg-string", "{{ -'a' }}"), ("call-string", "{{ 'a'() }}"), ("tilde-binds-tighter-than-plus", "{{ 1 + 2 ~ 3 }}"),
        ("string-concat-then-plus", "{{ 'a' ~ 1 + 2 }}"), ("selectattr-unknown-test", "{{ [1] | select('nosuchtest') | list }}"),
        ("map-unknown-filter", "{{ [1] | map('nosuchfilter') | list }}"),
    ]
    for sid, tpl in errors:
        S("err-" + sid, tpl, {"d": {"k": 1}})
    syntax = [("unclosed-if", "{% if true %}x"), ("dangling-operator", "{{ 1 + }}"), ("for-no-iterable", "{% for x in %}{% endfor %}"),
              ("endif-without-if", "{% endif %}"), ("unterminated-string", "{{ 'abc }}"), ("unknown-tag", "{% frobnicate %}"),
              ("unknown-filter", "{{ 1 | nosuchfilter }}"), ("unknown-test", "{{ 1 is nosuchtest }}"),
              ("unclosed-variable", "{{ x "), ("bad-set-target", "{% set 1 = 2 %}"),
              ("unclosed-comment", "{# never closed")]
    for sid, tpl in syntax:
        S("syntax-" + sid, tpl)
    return out


def generated_snippets(rng):
    out = []

    def S(sid, template, context=None):
        out.append((sid, template, context or {}))

    # Arithmetic on ints and floats, as literals or from the context.
    ints = [0, 1, 2, 3, 7, -1, -7, 10, -10, 12, 100, 1000000000000, -3]
    floats = [0.5, -2.25, 0.1, 3.0, 0.001, 2.5e10, -0.0, 1.75, 1e-05, 0.3]
    ops = ["+", "-", "*", "/", "//", "%", "**"]
    n = 0
    while n < 90:
        a = rng.choice(ints + floats)
        b = rng.choice(ints + floats)
        op = rng.choice(ops)
        if op == "**":
            if isinstance(b, float) or abs(b) > 6 or (isinstance(a, int) and abs(a) > 100) or \
                    (isinstance(a, float) and abs(a) > 1e3):
                b = rng.randint(-3, 5)
        if rng.random() < 0.5:
            tpl, ctx = "{{ a %s b }}" % op, {"a": a, "b": b}
        else:
            tpl, ctx = "{{ %r %s (%r) }}" % (a, op, b), {}
            if rng.random() < 0.3:
                c, op2 = rng.choice(ints + floats), rng.choice(["+", "-", "*", "/", "//", "%"])
                tpl = "{{ %r %s %r %s %r }}" % (a, op, b, op2, c)
        S("gen-arith-%03d" % n, tpl, ctx)
        n += 1

    # Comparison chains, within one type family.
    families = [[-1, 0, 1, 1.0, 2, 2.5, 3], ["", "a", "B", "b", "ab", "\u00e9", "\u65e5"], [[], [1], [1, 2], [2]]]
    for n in range(40):
        fam = rng.choice(families)
        k = rng.randint(2, 3)
        vals = [rng.choice(fam) for _ in range(k)]
        expr = repr(vals[0]) if not isinstance(vals[0], str) else json.dumps(vals[0])
        for v in vals[1:]:
            expr += " %s %s" % (rng.choice(["<", "<=", ">", ">=", "==", "!="]), json.dumps(v) if isinstance(v, str) else repr(v))
        S("gen-cmp-%03d" % n, "{{ %s }}" % expr)

    # Slicing strings (by code point) and lists.
    seqs = ["h\u00e9llo w\u00f6rld", "\u65e5\u672c\u8a9e\u306e\u30c6\u30ad\u30b9\u30c8", "a\U0001F600b\U0001F44D\U0001F3FDc",
            "e\u0301a\u0308o", "plain ascii", "", [0, 1, 2, 3, 4, 5, 6, 7], ["a", None, 2.5, True]]
    for n in range(80):
        s = rng.choice(seqs)
        parts = [rng.choice([None, rng.randint(-9, 9)]) for _ in range(2)]
        step = rng.choice([None, None, -1, -2, 2, 3, -3, 1])
        sl = ":".join("" if p is None else str(p) for p in parts)
        if step is not None or rng.random() < 0.3:
            sl += ":" + ("" if step is None else str(step))
        filt = rng.choice(["", " | tojson", " | length"])
        if rng.random() < 0.2 and s:
            sl = str(rng.randint(-len(s), len(s) - 1))
            filt = rng.choice(["", " | tojson"])
        S("gen-slice-%03d" % n, "{{ s[%s]%s }}" % (sl, filt), {"s": s})

    # String methods on awkward strings.
    strs = ["  padded \n", "\n\nlead", "trail\n\n", "a,b,,c,", " a  b\tc\n", "\u3000\u00a0wide\u2028", "x.y.z",
            "<think>\nr\n</think>\n\na", "CamelCase wORDS", "\u00e9t\u00e9 \u00c9T\u00c9", "", "line1\r\nline2\rline3\n",
            "aaa", "\u65e5\u672c \u8a9e", "it's o'neil", "\U0001F600 x \U0001F600"]
    calls = ["strip()", "strip('\\n')", "strip(' ax')", "lstrip()", "lstrip('\\n')", "rstrip()", "rstrip('\\n ')",
             "split()", "split(',')", "split(',', 1)", "split(' ')", "split(none, 1)", "split('\\n')", "rsplit(',', 1)",
             "rsplit(none, 1)", "rsplit('.')", "splitlines()", "upper()", "lower()", "title()", "capitalize()",
             "replace('a', '_')", "replace(' ', '')", "replace('\\n', '\\\\n', 1)", "find('a')", "find('\\n')",
             "count('a')", "count(' ')", "startswith('<think>')", "endswith(('\\n', 'a'))", "startswith((' ', '\\n'))",
             "split('</think>')[-1].lstrip('\\n')"]
    for n in range(80):
        S("gen-str-%03d" % n, "{{ s.%s | tojson }}" % rng.choice(calls), {"s": rng.choice(strs)})

    # Filter pipelines over a list of records.
    names = ["ann", "Bob", "cid", "Dee", "\u00e9mile", "bob", "Zoe"]
    pipes = ["{{ rs | sort(attribute='%(num)s') | map(attribute='name') | join(',') }}",
             "{{ rs | sort(attribute='%(num)s', reverse=true) | map(attribute='%(num)s') | list }}",
             "{{ rs | sort(attribute='name') | map(attribute='name') | join('|') }}",
             "{{ rs | selectattr('%(flag)s') | map(attribute='name') | list | tojson }}",
             "{{ rs | rejectattr('%(flag)s') | list | length }}",
             "{{ rs | selectattr('%(num)s', 'gt', %(k)s) | map(attribute='name') | join }}",
             "{{ rs | selectattr('%(num)s', 'divisibleby', 2) | map(attribute='%(num)s') | list }}",
             "{{ rs | map(attribute='name') | unique | list }}",
             "{{ rs | map(attribute='name') | map('lower') | unique | sort | join(' ') }}",
             "{{ rs | sum(attribute='%(num)s') }}", "{{ (rs | min(attribute='%(num)s')).name }}",
             "{{ (rs | max(attribute='%(num)s')).name }}", "{{ rs | map(attribute='%(num)s') | select('odd') | list }}",
             "{{ rs | map(attribute='name') | sort(case_sensitive=true) | first }}",
             "{{ rs | map(attribute='nick', default='?') | join }}", "{{ rs | groupby('%(flag)s') | map('first') | list }}",
             "{% for r in rs | sort(attribute='%(num)s') if r.%(flag)s %}{{ loop.index }}{{ r.name }}{{ ',' if not loop.last }}{% endfor %}"]
    for n in range(50):
        rs = []
        for _ in range(rng.randint(0, 5)):
            r = {"name": rng.choice(names), "age": rng.randint(-5, 60), "score": rng.choice([0.5, 2.25, 1.0, -3.5, 10.0]),
                 "admin": rng.random() < 0.5, "active": rng.choice(["", "y", "yes"])}
            if rng.random() < 0.3:
                r["nick"] = r["name"][:2]
            rs.append(r)
        tpl = rng.choice(pipes)
        for key, choices in (("num", ["age", "score"]), ("flag", ["admin", "active"]), ("k", ["0", "10", "2.5"])):
            tpl = tpl.replace("%%(%s)s" % key, rng.choice(choices))
        S("gen-filt-%03d" % n, tpl, {"rs": rs})

    # tojson and Python repr of random nested values.
    for n in range(50):
        v = json_value(rng, 3)
        while not isinstance(v, (list, dict)) and rng.random() < 0.8:
            v = json_value(rng, 3)
        if rng.random() < 0.5:
            ind = rng.choice([None, 0, 1, 2, 4])
            args = []
            if ind is not None:
                args.append("indent=%d" % ind)
            if rng.random() < 0.4:
                args.append("sort_keys=true")
            tpl = "{{ v | tojson(%s) }}" % ", ".join(args) if args else "{{ v | tojson }}"
        else:
            tpl = "{{ v }}"
        S("gen-json-%03d" % n, tpl, {"v": v})

    # Whitespace: random mixes of text, tags with -/+ modifiers, comments and blocks.
    pads = ["", " ", "  ", "\n", "\n\n", "\t", " \n", "\n  ", "\t\n\t", "x", "x\n", "\n y "]

    def tag(body, block=True):
        left = rng.choice(["", "", "-", "+"] if block else ["", "-"])
        right = rng.choice(["", "", "-", "+"] if block else ["", "-"])
        return ("{%" + left + " " + body + " " + right + "%}") if block else ("{{" + left + " " + body + " " + right + "}}")

    def piece(depth):
        r = rng.random()
        if r < 0.35 or depth > 1:
            return rng.choice(pads)
        if r < 0.5:
            return tag(rng.choice(["'v'", "1", "i is defined"]), block=False)
        if r < 0.6:
            return "{#" + rng.choice(["", "-"]) + " c " + rng.choice(["", "-"]) + "#}"
        inner = "".join(piece(depth + 1) for _ in range(rng.randint(1, 3)))
        if r < 0.8:
            return tag("if %s" % rng.choice(["true", "false"])) + inner + tag("endif")
        return tag("for i in [1, 2]") + inner + tag("endfor")

    for n in range(50):
        S("gen-ws-%03d" % n, "".join(piece(0) for _ in range(rng.randint(2, 6))))
    return out


def render_snippet(template, context):
    context = json.loads(json.dumps(context))
    try:
        compiled = _compile_jinja_template(template)
        return compiled.render(**context), None
    except Exception as e:  # noqa: BLE001 -- every failure is a fixture here
        return None, f"{type(e).__name__}: {e}"


def snippet_records():
    snippets = hand_snippets() + generated_snippets(random.Random(4242))
    ids = [s[0] for s in snippets]
    dup = sorted({i for i in ids if ids.count(i) > 1})
    assert not dup, dup
    records = []
    for sid, template, context in snippets:
        rendered, error = render_snippet(template, context)
        if rendered is not None and ("object at 0x" in rendered or "<generator" in rendered):
            raise SystemExit(f"{sid}: the output depends on memory addresses: {rendered!r}")
        records.append({"id": sid, "template": template, "context": json.loads(json.dumps(context)),
                        "rendered": rendered, "error": error})
    return records


def write_jsonl(path, records):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        for r in records:
            f.write(dumps(r) + "\n")


ENGINE_CASES = [
    ("mistral-v1", None, "Tell me a story about a cat.", {}),
    ("mistral-v1", "You are terse.", "Caf\u00e9 \u4f60\u597d \U0001F44D\U0001F3FD, please!", {}),
    ("mistral-v1-metaspace", "Be kind.", " leading space and </s> typed", {}),
    ("qwen3", None, "What is 12345 + 678?", {}),
    ("qwen3", "You are a helpful assistant.", "Write a haiku.\nAbout\tcode.", {"enable_thinking": False}),
    ("qwen3", None, "typed <|im_end|> and <think>", {"enable_thinking": True}),
]


def engine_records(chats):
    records = []
    for name, system, prompt, kwargs in ENGINE_CASES:
        hf, _ = chats.tokenizer(name)
        messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]
        ids = hf.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, **kwargs)
        records.append({"tokenizer": name, "system": system, "prompt": prompt, "kwargs": kwargs, "ids": list(ids)})
    return records


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default=os.path.join(ROOT, "..", "shared", "models"))
    args = ap.parse_args()
    assert tokenizers.__version__ == "0.22.1", tokenizers.__version__
    assert transformers.__version__ == "4.57.1", transformers.__version__
    assert jinja2.__version__ == "3.1.6", jinja2.__version__
    chats = Chats(args.models)
    check_public(chats)
    for name, text_ in TEMPLATE_FILES.items():
        path = os.path.join(OUT, "templates", name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w", encoding="utf-8", newline="\n") as f:
            f.write(text_)
    records = chat_records(chats)
    write_jsonl(os.path.join(OUT, "golden_chat.jsonl"), records)
    print(f"golden_chat.jsonl: {len(records)} records, {sum(r['error'] is not None for r in records)} with an error")
    engine = engine_records(chats)
    write_jsonl(os.path.join(OUT, "engine_chat.jsonl"), engine)
    print(f"engine_chat.jsonl: {len(engine)} records")
    snippets = snippet_records()
    write_jsonl(os.path.join(OUT, "snippets.jsonl"), snippets)
    print(f"snippets.jsonl: {len(snippets)} records, {sum(r['error'] is not None for r in snippets)} with an error")
    total = 0
    for base, _, files in os.walk(OUT):
        total += sum(os.path.getsize(os.path.join(base, f)) for f in files)
    print(f"{OUT}: {total / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
