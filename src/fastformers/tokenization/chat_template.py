"""Chat templates: `apply_chat_template` renders a conversation with the tokenizer's Jinja template in jinja2's
immutable sandbox, with transformers' globals, filters and post-processing (generation prompt, continued final
message, assistant masks from `{% generation %}` blocks, control tokens in user inputs encoded as text), so text
and ids match transformers. Templates are saved as transformers 5 saves them (chat_template.jinja,
additional_chat_templates/<name>.jinja)."""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import os
import re
import time
from collections.abc import Mapping
from contextvars import ContextVar
from datetime import datetime
from typing import Optional

import numpy as np

from .batch_encoding import BatchEncoding

logger = logging.getLogger("fastformers.tokenization")

CHAT_TEMPLATE_FILE = "chat_template.jinja"
CHAT_TEMPLATE_DIR = "additional_chat_templates"


class ChatTemplateMixin:
    """The chat-template part of `PreTrainedTokenizerFast` (which provides `chat_template`,
    `chat_control_tokens`, the call, `encode`, `pad` and the vocabulary these methods use)."""

    def get_chat_template(self, chat_template: Optional[str] = None, tools: Optional[list] = None) -> str:
        """The Jinja template `apply_chat_template` uses: `chat_template` itself, or the named one of several
        (with several and none named: "tool_use" when tools are given, else "default")."""
        if isinstance(self.chat_template, dict):
            templates = self.chat_template
            if chat_template is not None and chat_template in templates:
                return templates[chat_template]
            if chat_template is None:
                if tools is not None and "tool_use" in templates:
                    return templates["tool_use"]
                if "default" in templates:
                    return templates["default"]
                raise ValueError(
                    "This model has multiple chat templates with no default specified! Please either pass a chat "
                    "template or the name of the template you wish to use to the `chat_template` argument. "
                    f"Available template names are {sorted(templates)}.")
            return chat_template
        if chat_template is None:
            if self.chat_template is None:
                raise ValueError(
                    "Cannot use chat template functions because tokenizer.chat_template is not set and no template "
                    "argument was passed! Set tokenizer.chat_template (a Jinja template string) or pass "
                    "chat_template=... (see https://huggingface.co/docs/transformers/main/en/chat_templating)")
            return self.chat_template
        return chat_template

    def apply_chat_template(self, conversation, tools: Optional[list] = None, documents: Optional[list] = None,
                            chat_template: Optional[str] = None, add_generation_prompt: bool = False,
                            continue_final_message=False, tokenize: bool = True,
                            sanitize_control_tokens: bool = False, padding=False, truncation: bool = False,
                            max_length: Optional[int] = None, return_tensors=None, return_dict: bool = True,
                            return_assistant_tokens_mask: bool = False, tokenizer_kwargs: Optional[dict] = None,
                            **kwargs):
        """Render a conversation (a list of {"role": ..., "content": ...} messages), or a batch of them, with the
        tokenizer's Jinja chat template, then tokenize it (transformers 5 semantics: with ``tokenize=True`` the
        result is a BatchEncoding unless ``return_dict=False``, which gives the input ids; ``tokenize=False`` gives
        the text). Extra keyword arguments are template variables. Templates run in jinja2's immutable sandbox:
        they cannot reach Python internals (``__class__``, ``__subclasses__``...) or call unsafe methods.

        ``tools`` are JSON-schema dicts; ``documents`` dicts. ``continue_final_message`` (True, or the field name
        to continue) leaves the last message open for the model to continue; ``return_assistant_tokens_mask``
        marks the tokens inside the template's ``{% generation %}`` blocks; ``sanitize_control_tokens`` encodes
        control tokens found in the inputs as plain text, so only the template itself writes control tokens.
        """
        if not tokenize:
            return_dict = False
        if return_assistant_tokens_mask and not (return_dict and tokenize):
            raise ValueError("`return_assistant_tokens_mask=True` requires `return_dict=True` and `tokenize=True`")
        tokenizer_kwargs = dict(tokenizer_kwargs or {})
        template = self.get_chat_template(chat_template, tools)

        if isinstance(conversation, (list, tuple)) and len(conversation) == 0:
            raise ValueError("Cannot apply chat template to an empty conversation. Provide at least one message.")
        batched = isinstance(conversation, (list, tuple)) and (
            isinstance(conversation[0], (list, tuple)) or hasattr(conversation[0], "messages"))
        conversations = list(conversation) if batched else [conversation]
        conversations = [[{k: v for k, v in message.items() if v is not None} if isinstance(message, Mapping)
                          else message for message in getattr(chat, "messages", chat)] for chat in conversations]

        if continue_final_message:
            if add_generation_prompt:
                raise ValueError(
                    "continue_final_message and add_generation_prompt are not compatible. Use continue_final_message "
                    "when you want the model to continue the final message, and add_generation_prompt when you "
                    "want to add a header that will prompt it to start a new assistant message instead.")
            if return_assistant_tokens_mask:
                raise ValueError("continue_final_message is not compatible with return_assistant_tokens_mask.")
        if sanitize_control_tokens:
            if not tokenize or return_assistant_tokens_mask:
                raise ValueError("`sanitize_control_tokens=True` requires `tokenize=True` and is not compatible "
                                 "with `return_assistant_tokens_mask=True`.")
            pattern = _control_token_patterns(self._chat_control_tokens(template))[0]
            conversations = [_mark_control_tokens(chat, pattern) for chat in conversations]
            tools = _mark_control_tokens(tools, pattern)
            documents = _mark_control_tokens(documents, pattern)
            kwargs = _mark_control_tokens(kwargs, pattern)

        template_kwargs = {**self.special_tokens_map, **kwargs}
        rendered, generation_spans = _render_chat(
            conversations, template, tools=tools, documents=documents,
            add_generation_prompt=add_generation_prompt, continue_final_message=continue_final_message,
            track_generation=return_assistant_tokens_mask, **template_kwargs)
        if not batched:
            rendered = rendered[0]
        if not tokenize:
            return rendered

        out = self(rendered, padding=padding, truncation=truncation, max_length=max_length,
                   add_special_tokens=False, return_tensors=return_tensors,
                   sanitize_control_tokens=sanitize_control_tokens, **tokenizer_kwargs)
        if not return_dict:
            return out["input_ids"]
        if return_assistant_tokens_mask:
            input_ids = out["input_ids"] if (batched or return_tensors) else [out["input_ids"]]
            masks = []
            for i in range(len(input_ids)):
                mask = [0] * len(input_ids[i])
                for start_char, end_char in generation_spans[i]:
                    start = out.char_to_token(i, start_char)
                    end = out.char_to_token(i, end_char - 1)
                    if start is None:  # cut off by truncation
                        break
                    for index in range(start, end + 1 if end else len(input_ids[i])):
                        mask[index] = 1
                masks.append(mask)
            out["assistant_masks"] = masks if (batched or return_tensors) else masks[0]
            if return_tensors:
                out.convert_to_tensors(tensor_type=return_tensors)
        return out

    def encode_message_with_chat_template(self, message: dict, conversation_history: Optional[list] = None,
                                          **kwargs) -> list[int]:
        """The ids of one message rendered after `conversation_history` (for token-by-token chat streaming)."""
        if "add_generation_prompt" in kwargs:
            raise ValueError("`encode_message_with_chat_template` does not support `add_generation_prompt`. Please "
                             "add the generation prompt separately.")
        if not conversation_history:
            return self.apply_chat_template([message], add_generation_prompt=False, tokenize=True,
                                            return_dict=False, **kwargs)
        tokens = self.apply_chat_template(list(conversation_history) + [message], add_generation_prompt=False,
                                          tokenize=True, return_dict=False, **kwargs)
        prefix = self.apply_chat_template(conversation_history, add_generation_prompt=False, tokenize=True,
                                          return_dict=False, **kwargs)
        for i in range(min(len(prefix), len(tokens))):
            if prefix[i] != tokens[i]:
                return tokens[i:]
        return tokens[min(len(prefix), len(tokens)):]

    def _chat_control_tokens(self, template: str) -> tuple[str, ...]:
        """Tokens that sanitize_control_tokens encodes as text when they appear in the inputs: special added
        tokens, plus `chat_control_tokens` when set, else the added tokens the template itself writes."""
        added = self.added_tokens_decoder.values()
        if self.chat_control_tokens is not None:
            listed = set(self.chat_control_tokens)
            return tuple(t.content for t in added if t.special or t.content in listed)
        literal = _template_literal_text(template)
        return tuple(t.content for t in added
                     if t.special or (t.content in literal and not t.content.isspace()))

    def _encode_without_added_tokens(self, text: str) -> list[int]:
        """`text` through normalizer, pre-tokenizer and model only: no added token, special or not, is matched."""
        backend = self._tokenizer
        if backend.normalizer is not None:
            text = backend.normalizer.normalize_str(text)
        splits = [text]
        if backend.pre_tokenizer is not None:
            splits = [split for split, _ in backend.pre_tokenizer.pre_tokenize_str(text)]
        return [token.id for split in splits for token in backend.model.tokenize(split)]

    def _encode_marked_chat(self, chat: str) -> list[int]:
        """Encode a chat rendered from marked inputs: marked control tokens as plain text, the rest as usual."""
        markers = _control_token_patterns(tuple(self.added_tokens_encoder))[1]
        pieces = markers.split(chat)
        newline = self.encode("\n", add_special_tokens=False)
        ids = self.encode(pieces[0], add_special_tokens=False)
        for i, piece in enumerate(pieces[1:], start=1):
            if not piece:
                continue
            as_text = i % 2 == 1  # odd pieces are marked tokens
            encode = (self._encode_without_added_tokens if as_text
                      else functools.partial(self.encode, add_special_tokens=False))
            # after a newline, so that a SentencePiece prefix space is not added mid-chat; then drop the newline
            piece_ids = encode("\n" + piece)
            if piece_ids[:len(newline)] == newline:
                piece_ids = piece_ids[len(newline):]
            else:
                piece_ids = encode(piece)
            if as_text and self.convert_tokens_to_ids(piece) in piece_ids:
                raise ValueError(f"Can't sanitize {piece!r}: the tokenizer produces it from plain text")
            ids += piece_ids
        return ids

    def _encode_sanitized(self, text, pad, trunc, max_length, *, add_special_tokens=True, pad_to_multiple_of=None,
                          padding_side=None, return_tensors=None, return_attention_mask=None,
                          **unused) -> BatchEncoding:
        post_processor = self._tokenizer.post_processor
        if add_special_tokens and post_processor is not None and post_processor.num_special_tokens_to_add(False):
            raise NotImplementedError("`sanitize_control_tokens=True` needs a template that writes special tokens")
        batched = isinstance(text, (list, tuple))
        ids = [self._encode_marked_chat(t) for t in (text if batched else [text])]
        if trunc != "do_not_truncate" and max_length is not None:
            ids = [x[:max_length] if self.truncation_side == "right" else x[-max_length:] for x in ids]
        return self.pad({"input_ids": ids if batched or return_tensors else ids[0]}, padding=pad,
                        max_length=max_length, pad_to_multiple_of=pad_to_multiple_of, padding_side=padding_side,
                        return_attention_mask=return_attention_mask, return_tensors=return_tensors)

    def _save_chat_templates(self, save_directory: str, prefix: str, config: dict, jinja_files: bool) -> list:
        """As transformers 5 writes them: a single template to chat_template.jinja; several as
        chat_template.jinja (the "default" one) plus additional_chat_templates/<name>.jinja. With
        save_jinja_files=False, into tokenizer_config.json instead (a string, or a list of {name, template})."""
        written = []
        templates = self.chat_template
        if templates is None:
            return written
        if not jinja_files:
            config["chat_template"] = (templates if isinstance(templates, str)
                                       else [{"name": k, "template": v} for k, v in templates.items()])
            return written
        if isinstance(templates, str):
            templates = {"default": templates}
        extra_dir = os.path.join(save_directory, prefix + CHAT_TEMPLATE_DIR)
        for name, template in templates.items():
            if name == "default":
                path = os.path.join(save_directory, prefix + CHAT_TEMPLATE_FILE)
            else:
                path = os.path.join(extra_dir, f"{name}.jinja")
                if (not isinstance(name, str) or os.path.dirname(os.path.normpath(path)) != os.path.normpath(extra_dir)
                        or name in ("", ".", "..")):
                    raise ValueError(f"Invalid chat template name: {name!r}")
                os.makedirs(extra_dir, exist_ok=True)
            with open(path, "w", encoding="utf-8") as f:
                f.write(template)
            written.append(path)
        return written


# ---------------------------------------------------------------------------------------------------------------
# Chat templates (Jinja, rendered in jinja2's immutable sandbox)
# ---------------------------------------------------------------------------------------------------------------

_CONTINUE_TAG = "CONTINUE_FINAL_MESSAGE_TAG "
_REASONING_FIELDS = ("reasoning_content", "thinking", "reasoning")
# private-use characters: around control tokens found in user inputs (sanitize_control_tokens), and around the
# output of {% generation %} blocks while assistant masks are computed
_CONTROL_START, _CONTROL_END = "\U000f0000", "\U000f0001"
_GENERATION_START, _GENERATION_END = "\U000f0002", "\U000f0003"
_TRACK_GENERATION: ContextVar[bool] = ContextVar("fastformers_track_generation", default=False)


# Bounds on rendering an (untrusted) chat template. transformers 5.25 renders with no bound: two nested
# `range(100000)` loops keep a CPU busy for hours, `"x" * 10**10` takes 10 GB. Here every loop iteration,
# call, filter and operator checks a per-render budget: wall time, and the size of any string / list made
# (and of int arguments, which decide sizes: `center(10**10)`). Raise them for unusual templates by setting
# these module attributes.
CHAT_TEMPLATE_MAX_SECONDS = 1.0
CHAT_TEMPLATE_MAX_CHARS = 16_000_000  # or twice the inputs' size when that is more


class ChatTemplateLimitError(ValueError):
    """A chat template exceeded the time or size bound on rendering."""


@dataclasses.dataclass
class _Budget:
    deadline: float
    max_chars: int
    seconds: float

    def check_time(self) -> None:
        if time.monotonic() > self.deadline:
            raise ChatTemplateLimitError(
                f"the chat template ran for more than {self.seconds:g} s and was stopped (fastformers."
                "tokenization.chat_template.CHAT_TEMPLATE_MAX_SECONDS sets the bound)")

    def check_size(self, value, what: str = "a value", ints: bool = False) -> None:
        """A string / list / tuple / dict longer than the bound; with `ints`, an int beyond it (an argument
        that sets a size: `center(10**10)`, `lipsum(10**9)`, `tojson(indent=10**9)`)."""
        if isinstance(value, (str, list, tuple, dict)) and len(value) > self.max_chars:
            self.too_big(f"{what} of length {len(value)}")
        if ints and isinstance(value, int) and not isinstance(value, bool) and abs(value) > self.max_chars:
            self.too_big(f"{what} {value}")

    def too_big(self, what: str):
        raise ChatTemplateLimitError(
            f"the chat template would make {what}; the bound is {self.max_chars} (characters, items, or the value "
            "of a size argument; fastformers.tokenization.chat_template.CHAT_TEMPLATE_MAX_CHARS sets it)")


_BUDGET: ContextVar[Optional[_Budget]] = ContextVar("fastformers_chat_template_budget", default=None)


def _budget() -> _Budget:
    budget = _BUDGET.get()
    if budget is None:  # a compiled template rendered outside _render_chat: the size bound (time is per check)
        budget = _Budget(time.monotonic() + CHAT_TEMPLATE_MAX_SECONDS, CHAT_TEMPLATE_MAX_CHARS,
                         CHAT_TEMPLATE_MAX_SECONDS)
    return budget


def _input_chars(value) -> int:
    """The characters of strings in plain template data (what the output may fairly grow with)."""
    if isinstance(value, str):
        return len(value)
    if isinstance(value, Mapping):
        return sum(_input_chars(k) + _input_chars(v) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return sum(_input_chars(v) for v in value)
    return 0


_FORMAT_WIDTH = re.compile(r"\{[^{}]*:[^{}]*(?:\d{7,}|\{)")  # also nested {width} fields
_PRINTF_WIDTH = re.compile(r"%[-#0 +]*(?:\*|\d{7,})|%[-#0 +]*\d*\.(?:\*|\d{7,})")


def _check_binop(budget: _Budget, operator: str, left, right) -> None:
    """Refuse an operation whose result would exceed the size bound, before computing it."""
    sized = (str, list, tuple)
    if operator == "*":
        for seq, n in ((left, right), (right, left)):
            if isinstance(seq, sized) and isinstance(n, int) and len(seq) * max(n, 0) > budget.max_chars:
                budget.too_big(f"a {type(seq).__name__} of length {len(seq)} times {n}")
        if isinstance(left, int) and isinstance(right, int) and left.bit_length() + right.bit_length() > 1 << 16:
            budget.too_big("an integer product with more than 65536 bits")
    elif operator == "+":
        if isinstance(left, sized) and isinstance(right, sized) and len(left) + len(right) > budget.max_chars:
            budget.too_big(f"a concatenation of length {len(left) + len(right)}")
    elif operator == "**":
        if isinstance(left, int) and isinstance(right, int) and abs(left) > 1 and \
                left.bit_length() * right > 1 << 16:
            budget.too_big(f"an integer power {left} ** {right}")
    elif operator == "%" and isinstance(left, str) and _PRINTF_WIDTH.search(left):
        budget.too_big("a printf format with a width or precision of a million or more (or '*')")


def _check_arguments(budget: _Budget, what: str, args, kwargs) -> None:
    for value in (*args, *kwargs.values()):
        budget.check_size(value, f"an argument to {what}", ints=True)


def _bounded_iter(iterable):
    """A `{% for %}` loop's iterable, checking the time bound at every iteration."""
    budget = _budget()
    budget.check_size(iterable, "a loop over a sequence")
    for item in iterable:
        budget.check_time()
        yield item


def _bounded_concat(values) -> str:
    """`a ~ b ~ ...` with the size bound checked before joining."""
    budget = _budget()
    parts = [str(v) for v in values]
    if sum(map(len, parts)) > budget.max_chars:
        budget.too_big(f"a concatenation of length {sum(map(len, parts))}")
    return "".join(parts)


def _bounded_join(parts) -> str:
    """The environment's `concat` (block sets, macro bodies): the size bound checked before joining."""
    budget = _budget()
    parts = list(parts)
    size = sum(len(p) for p in parts)
    if size > budget.max_chars:
        budget.too_big(f"a block of {size} characters")
    return "".join(parts)


def _bound_template_ast(jinja2, ast):
    """Route every `for` loop's iterable and every `~` through the bounded helpers (filters whose names have a
    space, which templates cannot write)."""
    nodes = jinja2.nodes
    for loop in ast.find_all(nodes.For):
        loop.iter = nodes.Filter(loop.iter, "ff bounded iter", [], [], None, None, lineno=loop.lineno)
    for parent in list(ast.find_all(nodes.Node)):
        for field in parent.fields:
            value = getattr(parent, field, None)
            if isinstance(value, nodes.Concat):
                setattr(parent, field, _concat_filter(nodes, value))
            elif isinstance(value, list):
                setattr(parent, field, [_concat_filter(nodes, v) if isinstance(v, nodes.Concat) else v
                                        for v in value])
    return ast


def _concat_filter(nodes, concat):
    return nodes.Filter(nodes.List(concat.nodes, lineno=concat.lineno), "ff bounded concat", [], [], None, None,
                        lineno=concat.lineno)


def _jinja():
    try:
        import jinja2
        import jinja2.ext
        import jinja2.meta
        import jinja2.nodes
        import jinja2.sandbox
    except ImportError:
        raise ImportError("apply_chat_template requires jinja2: pip install 'jinja2>=3.1.6'") from None
    version = tuple(int(p) if p.isdigit() else 0 for p in jinja2.__version__.split(".")[:3])
    if version < (3, 1, 6):  # older releases have known sandbox escapes; chat templates are untrusted input
        raise ImportError(f"apply_chat_template requires jinja2>=3.1.6 (installed: {jinja2.__version__}): "
                          "pip install -U jinja2")
    return jinja2


@functools.lru_cache(maxsize=64)
def _compile_chat_template(template: str):
    """The template compiled in an ImmutableSandboxedEnvironment with transformers' globals and filters:
    trim_blocks / lstrip_blocks, `raise_exception(msg)`, `strftime_now(fmt)`, a JSON `tojson` filter (no HTML
    escaping, ensure_ascii off), loop controls, a `{% generation %}` block and underscore-safe `namespace`/`dict`."""
    jinja2 = _jinja()

    class GenerationBlock(jinja2.ext.Extension):
        """{% generation %}...{% endgeneration %}: renders its body; while assistant masks are being computed, the
        body is wrapped in private-use markers that _render_chat turns into character spans."""

        tags = {"generation"}

        def parse(self, parser):
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
            return jinja2.nodes.CallBlock(self.call_method("_render", []), [], [], body).set_lineno(lineno)

        def _render(self, caller):
            body = caller()
            return f"{_GENERATION_START}{body}{_GENERATION_END}" if _TRACK_GENERATION.get() else body

    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(value, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                          sort_keys=sort_keys)

    def strftime_now(fmt):
        return datetime.now().strftime(fmt)

    class TemplateDict:
        """`dict(...)` / `dict.fromkeys(...)` in templates, without exposing the dict type itself."""

        def __call__(self, *args, **kwargs):
            return dict(*args, **kwargs)

        def fromkeys(self, *args, **kwargs):
            return dict.fromkeys(*args, **kwargs)

    class TemplateNamespace(jinja2.utils.Namespace):
        """`namespace(...)` that refuses underscore-prefixed attribute names."""

        def __init__(*args, **kwargs):
            self, args = args[0], args[1:]
            attrs = dict(*args, **kwargs)
            for name in attrs:
                TemplateNamespace._check(name)
            jinja2.utils.Namespace.__init__(self, attrs)

        def __setitem__(self, name, value):
            TemplateNamespace._check(name)
            jinja2.utils.Namespace.__setitem__(self, name, value)

        @staticmethod
        def _check(name):
            if isinstance(name, str) and name.startswith("_"):
                raise jinja2.exceptions.SecurityError(
                    f"Chat templates cannot store underscore-prefixed attributes on a namespace, but got {name!r}.")

    class BoundedSandbox(jinja2.sandbox.ImmutableSandboxedEnvironment):
        """The immutable sandbox, with the time and size budget checked at every call and operator (the
        operators listed are also kept from compile-time constant folding)."""

        intercepted_binops = frozenset(["*", "**", "+", "%"])
        # joins the buffers of {% set %} blocks, macros and {% filter %} blocks
        concat = staticmethod(_bounded_join)

        def call_binop(self, context, operator, left, right):
            budget = _budget()
            _check_binop(budget, operator, left, right)
            result = super().call_binop(context, operator, left, right)
            budget.check_size(result, f"a result of {operator!r}")
            return result

        def call(__self, __context, __obj, *args, **kwargs):  # noqa: N805 - jinja2's signature
            budget = _budget()
            budget.check_time()
            _check_arguments(budget, "a call", args, kwargs)
            owner = getattr(__obj, "__self__", None)
            if isinstance(owner, str) and getattr(__obj, "__name__", None) == "replace" and len(args) >= 2 and \
                    isinstance(args[0], str) and isinstance(args[1], str) and \
                    len(owner) + (owner.count(args[0]) + 1) * len(args[1]) > budget.max_chars:
                budget.too_big("a str.replace result longer than the bound")
            method = getattr(__obj, "__wrapped__", __obj)  # the sandbox wraps str.format / format_map
            fmt = getattr(method, "__self__", None)
            if isinstance(fmt, str) and getattr(method, "__name__", None) in ("format", "format_map") and \
                    _FORMAT_WIDTH.search(fmt):
                budget.too_big("a format string with a width or precision of a million or more")
            result = super().call(__context, __obj, *args, **kwargs)
            budget.check_size(result, "a call's result")
            return result

    def bounded_filter(name, function):
        # jinja2 passes the context / eval context / environment first to filters marked for it
        skip = 2 if hasattr(function, "jinja_pass_arg") else 1  # that, and the value filtered

        def run(*args, **kwargs):
            budget = _budget()
            budget.check_time()
            _check_arguments(budget, f"the {name!r} filter", args[skip:], kwargs)
            text = args[skip - 1:skip + 2]
            if name == "replace" and len(text) == 3 and all(isinstance(a, str) for a in text) and \
                    len(text[0]) + (text[0].count(text[1]) + 1) * len(text[2]) > budget.max_chars:
                budget.too_big("a 'replace' filter result longer than the bound")
            result = function(*args, **kwargs)
            budget.check_size(result, f"the {name!r} filter's result")
            return result

        if hasattr(function, "jinja_pass_arg"):
            run.jinja_pass_arg = function.jinja_pass_arg
        return run

    env = BoundedSandbox(trim_blocks=True, lstrip_blocks=True, extensions=[GenerationBlock, jinja2.ext.loopcontrols])
    env.filters["tojson"] = tojson
    env.filters = {name: bounded_filter(name, f) for name, f in env.filters.items()}
    env.filters["ff bounded iter"] = _bounded_iter
    env.filters["ff bounded concat"] = _bounded_concat
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    env.globals["dict"] = TemplateDict()
    env.globals["namespace"] = TemplateNamespace
    try:
        return env.from_string(_bound_template_ast(jinja2, env.parse(template)))
    except jinja2.exceptions.TemplateSyntaxError as e:
        raise ValueError(f"the chat template is not valid Jinja (line {e.lineno}): {e.message}") from None


@functools.lru_cache(maxsize=64)
def _template_literal_text(template: str) -> str:
    """The template's literal text and string constants, joined by NULs (so no match spans two of them)."""
    jinja2 = _jinja()
    ast = _compile_chat_template(template).environment.parse(template)
    literals = {node.data for node in ast.find_all(jinja2.nodes.TemplateData)}
    literals |= {node.value for node in ast.find_all(jinja2.nodes.Const) if isinstance(node.value, str)}
    return "\0".join(literals)


@functools.lru_cache(maxsize=64)
def _control_token_patterns(tokens: tuple[str, ...]):
    """(regex matching any of `tokens`, longest first; regex matching a marked token or a lone marker)."""
    alternatives = "|".join(re.escape(t) for t in sorted(tokens, key=len, reverse=True)) or "(?!)"
    tokens_re = re.compile(alternatives)
    markers_re = re.compile(f"{_CONTROL_START}({alternatives}){_CONTROL_END}|[{_CONTROL_START}{_CONTROL_END}]")
    return tokens_re, markers_re


def _mark_control_tokens(obj, tokens_re):
    """Wrap control tokens inside user strings (recursively through lists and dict values) in markers."""
    if isinstance(obj, str):
        obj = obj.replace(_CONTROL_START, "").replace(_CONTROL_END, "")
        return tokens_re.sub(lambda m: f"{_CONTROL_START}{m.group(0)}{_CONTROL_END}", obj)
    if isinstance(obj, Mapping):
        return {key: _mark_control_tokens(value, tokens_re) for key, value in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_mark_control_tokens(value, tokens_re) for value in obj]
    return obj


def _plain_template_data(value):
    """What a template may see: plain JSON-like values rebuilt from the inputs. Subclasses of str / int / float
    become the base type, numpy scalars Python ones, dataclasses and pydantic models dicts; any other object an
    inert placeholder string "<TypeName>" (its methods never reach the sandbox)."""
    if value is None or type(value) in (str, int, float, bool):
        return value
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, int):
        return int.__int__(value)
    if isinstance(value, float):
        return float.__float__(value)
    if isinstance(value, Mapping):
        return {_plain_template_data(k): _plain_template_data(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain_template_data(v) for v in value]
    if isinstance(value, tuple):
        return tuple(_plain_template_data(v) for v in value)
    if isinstance(value, np.generic):
        return _plain_template_data(value.item())
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain_template_data(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if callable(getattr(value, "model_dump", None)):
        return _plain_template_data(value.model_dump())
    return f"<{type(value).__name__}>"


def _alias_reasoning_fields(chat: list) -> list:
    """A message's reasoning under any of its usual names is also given as `reasoning_content` and `thinking`."""
    out = []
    for message in chat:
        if isinstance(message, dict):
            reasoning = next((message[k] for k in _REASONING_FIELDS if message.get(k) is not None), None)
            if reasoning is not None:
                message = {"thinking": reasoning, **message, "reasoning_content": reasoning}
        out.append(message)
    return out


def _render_bounded(compiled, max_chars: int, **variables) -> str:
    """Render chunk by chunk, stopping as soon as the output passes `max_chars`."""
    budget = _budget()
    chunks, size = [], 0
    for chunk in compiled.generate(**variables):
        size += len(chunk)
        if size > max_chars:
            budget.too_big(f"an output of more than {size} characters")
        chunks.append(chunk)
    budget.check_time()
    return "".join(chunks)


def _generation_spans(text: str) -> tuple[str, list[tuple[int, int]]]:
    """Remove generation markers from `text`; return it and the (start, end) character spans they enclosed."""
    clean, spans, stack, removed = [], [], [], 0
    last = 0
    for match in re.finditer(f"[{_GENERATION_START}{_GENERATION_END}]", text):
        clean.append(text[last:match.start()])
        position = match.start() - removed
        removed += 1
        last = match.end()
        if match.group(0) == _GENERATION_START:
            stack.append(position)
        elif stack:
            spans.append((stack.pop(), position))
    clean.append(text[last:])
    return "".join(clean), spans


def _render_chat(conversations: list, template: str, tools=None, documents=None, add_generation_prompt=False,
                 continue_final_message=False, track_generation=False, **template_kwargs):
    """Render each conversation; returns (texts, generation character spans per text)."""
    if track_generation and not re.search(r"\{%-?\s*generation\s*-?%\}", template):
        logger.warning("return_assistant_tokens_mask==True but chat template does not contain `{% generation %}` "
                       "keyword.")
    compiled = _compile_chat_template(template)
    tool_schemas = None
    if tools is not None:
        tool_schemas = []
        for tool in tools:
            if not isinstance(tool, Mapping):
                raise ValueError("Tools should be JSON schemas (dicts with a 'type' and a 'function' entry); "
                                 f"fastformers does not convert Python functions to schemas (got {tool!r})")
            tool_schemas.append(tool)
    if documents is not None:
        for document in documents:
            if not isinstance(document, Mapping):
                raise TypeError("Documents should be a list of dicts with 'title' and 'text' keys!")
    tool_schemas = _plain_template_data(tool_schemas)
    documents = _plain_template_data(documents)
    template_kwargs = _plain_template_data(template_kwargs)

    inputs_chars = _input_chars(tool_schemas) + _input_chars(documents) + _input_chars(template_kwargs)
    texts, all_spans = [], []
    for chat in conversations:
        chat = _plain_template_data(list(getattr(chat, "messages", chat)))
        for message in chat:
            if not isinstance(message, dict):
                raise TypeError(f"Chat messages should be dicts, dataclasses or pydantic models, but got {message!r}.")
        chat = _alias_reasoning_fields(chat)
        final_message = None
        if continue_final_message:
            if not chat:
                raise ValueError("continue_final_message is set but the conversation is empty!")
            field = continue_final_message if isinstance(continue_final_message, str) else "content"
            final_message = chat[-1].get(field)
            if final_message is None:
                raise ValueError(f'continue_final_message is set but the final message has no "{field}" to '
                                 "continue!")
            fields = [field]
            if field in _REASONING_FIELDS:
                fields = [f for f in _REASONING_FIELDS if chat[-1].get(f) == final_message]
            if not any(f in template for f in fields):
                raise ValueError(f'continue_final_message is set to "{field}" but this is not an accepted field '
                                 "in the chat_template")
            if isinstance(final_message, (list, tuple)):
                for block in reversed(final_message):
                    if "text" in block:
                        final_message = block["text"]
                        block["text"] = block["text"] + _CONTINUE_TAG
                        break
                else:
                    raise ValueError("continue_final_message is set but we could not find any text to continue "
                                     "in the final message!")
            else:
                for f in fields:
                    chat[-1][f] = chat[-1][f] + _CONTINUE_TAG
        token = _TRACK_GENERATION.set(bool(track_generation))
        max_chars = max(CHAT_TEMPLATE_MAX_CHARS, 2 * (_input_chars(chat) + inputs_chars))
        budget = _BUDGET.set(_Budget(time.monotonic() + CHAT_TEMPLATE_MAX_SECONDS, max_chars,
                                     CHAT_TEMPLATE_MAX_SECONDS))
        try:
            text = _render_bounded(compiled, max_chars, messages=chat, tools=tool_schemas, documents=documents,
                                   add_generation_prompt=add_generation_prompt, **template_kwargs)
        except RecursionError:
            raise ChatTemplateLimitError("the chat template recursed too deep (a macro or recursive loop that "
                                         "does not end?)") from None
        finally:
            _BUDGET.reset(budget)
            _TRACK_GENERATION.reset(token)
        spans = []
        if track_generation:
            text, spans = _generation_spans(text)
        if continue_final_message:
            tag = _CONTINUE_TAG.strip()
            if final_message.strip() not in text or tag not in text:
                raise ValueError(
                    "continue_final_message is set but the final message does not appear in the chat after "
                    "applying the chat template! This can happen if the chat template deletes portions of the "
                    "final message. Please verify the chat template and final message in your chat to ensure "
                    f"they are compatible.Final message to continue: {final_message.strip()}\n"
                    f"Rendered chat:\n{text}")
            at = text.rindex(tag)
            text = text[:at] if text[at:at + len(_CONTINUE_TAG)] == _CONTINUE_TAG else text[:at].rstrip()
        texts.append(text)
        all_spans.append(spans)
    return texts, all_spans
