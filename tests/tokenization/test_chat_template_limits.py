"""Chat templates are untrusted input: rendering is bounded in time and in the size of what it makes, and going
past a bound is a ChatTemplateLimitError (a ValueError) saying which bound, never a hang or a multi-GB string.

transformers 5.25 (same sandbox, no bounds), checked by hand with a 5 s alarm: the nested `range(100000)` loops
and `'x'|center(10**9)` are still running after 5 s; endless macro recursion is a bare RecursionError. Normal
templates render exactly as before (the parity tests in test_chat_template.py, and the one below).
"""

from __future__ import annotations

import resource
import time

import pytest

from fastformers.tokenization import chat_template as ct
from fastformers.tokenization.chat_template import ChatTemplateLimitError, _render_chat

CHAT = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]


def render(template: str, **kwargs) -> str:
    return _render_chat([CHAT], template, **kwargs)[0][0]


@pytest.mark.malformed
def test_nested_loops_stop_within_the_time_bound():
    start = time.monotonic()
    with pytest.raises(ChatTemplateLimitError, match="ran for more than 1 s"):
        render("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}")
    assert time.monotonic() - start < 3  # the bound (1 s) plus one iteration, on a loaded machine


def test_time_bound_is_a_setting(monkeypatch):
    monkeypatch.setattr(ct, "CHAT_TEMPLATE_MAX_SECONDS", 0.05)
    start = time.monotonic()
    with pytest.raises(ChatTemplateLimitError, match="0.05 s"):
        render("{% for m in messages %}{% for i in range(100000) %}{% for j in range(100000) %}{{ '' }}"
               "{% endfor %}{% endfor %}{% endfor %}")
    assert time.monotonic() - start < 1


@pytest.mark.parametrize("template, match", [
    ("{{ 'x' * 10**10 }}", "str of length 1 times 10000000000"),
    ("{% set n = 100000 %}{{ 'x' * n * n }}", "times 100000"),
    ("{{ [0] * 10**9 }}", "list of length 1 times"),
    ("{% set ns = namespace(s='ab') %}{% for i in range(40) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}",
     "concatenation"),
    ("{% set ns = namespace(s='ab') %}{% for i in range(40) %}{% set ns.s = ns.s + ns.s %}{% endfor %}",
     "concatenation"),
    ("{% set ns = namespace(s='ab') %}{% for i in range(40) %}{% set ns.s = ns.s|replace('a', 'aaa') %}"
     "{% endfor %}", "'replace' filter result"),
    ("{% set ns = namespace(s='ab') %}{% for i in range(40) %}{% set ns.s = ns.s.replace('a', 'aaa') %}"
     "{% endfor %}", "str.replace result"),
    ("{{ 'x'|center(10**10) }}", "argument to the 'center' filter 10000000000"),
    ("{{ 'x'.ljust(10**10) }}", "argument to a call 10000000000"),
    ("{{ messages|tojson(indent=10**9) }}", "'tojson' filter 1000000000"),
    ("{{ lipsum(10**8) }}", "argument to a call 100000000"),
    ("{{ '%0999999999d' % 1 }}", "printf format"),
    ("{{ '{:>999999999}'.format(1) }}", "format string"),
    ("{{ '{:>{w}}'.format(1, w=999999999) }}", "argument to a call 999999999"),
    ("{{ 7 ** 1000000 }}", "integer power"),
    ("{% for i in range(100000) %}{% for j in range(100000) %}xxxxxxxxxx{% endfor %}{% endfor %}", "an output of"),
    ("{% set big = 'x' * 10000000 %}{% set s %}{% for i in range(100) %}{{ big }}{% endfor %}{% endset %}",
     "a block of"),
    ("{% set big = 'x' * 10000000 %}{% macro m() %}{% for i in range(100) %}{{ big }}{% endfor %}{% endmacro %}"
     "{{ m()|length }}", "a block of"),
])
@pytest.mark.malformed
def test_size_bound(template, match):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.monotonic()
    with pytest.raises(ChatTemplateLimitError, match=match):
        render(template)
    assert time.monotonic() - start < 3
    assert (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024 < 300  # MB: bound is 16M chars


@pytest.mark.malformed
def test_endless_recursion_is_a_limit_error():
    with pytest.raises(ChatTemplateLimitError, match="recursed too deep"):
        render("{% macro f(n) %}{{ f(n) }}{% endmacro %}{{ f(1) }}")


@pytest.mark.malformed
def test_large_inputs_raise_the_size_bound(monkeypatch):
    monkeypatch.setattr(ct, "CHAT_TEMPLATE_MAX_CHARS", 1000)
    long = [{"role": "user", "content": "y" * 5000}]
    text = _render_chat([long], "{% for m in messages %}{{ m.content ~ '!' }}{% endfor %}")[0][0]
    assert text == "y" * 5000 + "!"  # the output may be twice the inputs
    with pytest.raises(ChatTemplateLimitError, match=r"times 3; the bound is 100\d\d "):
        _render_chat([long], "{% for m in messages %}{{ m.content * 3 }}{% endfor %}")


def test_a_normal_template_renders_as_transformers_does():
    from transformers.utils.chat_template_utils import render_jinja_template

    template = ("{% set ns = namespace(n=0) %}{% for m in messages %}{% set ns.n = ns.n + 1 %}"
                "{{ '<|' ~ m.role ~ '|>' + m.content|trim|upper }}{{ '%03d' % loop.index }}"
                "{{ '{:>6}'.format(m.role) }}{{ m.content * 2 }}{% if not loop.last %}\n{% endif %}{% endfor %}"
                "{{ ns.n ** 2 }}{{ (messages|map(attribute='content')|join(', '))|replace('h', 'H') }}"
                "{% for k, v in {'a': 1}.items() recursive %}{{ k }}={{ v }}{% else %}none{% endfor %}"
                "{% for x in [] %}{{ x }}{% else %}empty{% endfor %}{{ messages|tojson }}"
                "{% if add_generation_prompt %}<|assistant|>{% endif %}")
    ours = render(template, add_generation_prompt=True)
    theirs = render_jinja_template(conversations=[CHAT], chat_template=template, add_generation_prompt=True)[0][0]
    assert ours == theirs
    assert "<|user|>HI001  userhihi" in ours and ours.endswith("<|assistant|>")
