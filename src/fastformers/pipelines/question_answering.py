"""question-answering: extractive QA, the answer is a span of the context.

transformers 5 dropped this pipeline; this one keeps transformers 4's behaviour and outputs (its fast-tokenizer
path). A context too long for `max_seq_len` is cut into overlapping windows (`doc_stride` tokens shared by
neighbours). In each window the start and end logits of the tokens that cannot be in an answer (question,
special tokens; the CLS token is kept, it stands for "no answer") are set to -10000, each is softmaxed over the
window, the score of a span is p_start * p_end with 0 <= end - start < max_answer_len, and the best
`2 * top_k + 10` spans of each window (`top_k` without `align_to_words`) become character spans of the
context. Spans with the same text (case-insensitive) are merged, their scores added. With
`handle_impossible_answer` the empty answer competes with the smallest p_start[0] * p_end[0] of the windows.

Each answer is {"score": float, "start": int, "end": int, "answer": context[start:end]}. As transformers 4:
one result is a dict when it holds one answer, else a list of dicts; an input list gives a list of results,
except a list of one input, which gives that input's result.

Where transformers 4 misbehaves, this one does not: with fewer candidate spans than it asks for, transformers
fills the list with zero-score non-spans (this one returns fewer answers); with a tokenizer that pads on the left
it lets question tokens be answers (here only context tokens are); a question too long for the window
breaks in the tokenizer (here it is cut to `max_question_len` tokens when that makes it fit, else a ValueError).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np

from .base import Pipeline, batches

MASKED_LOGIT = -10000.0  # transformers' value for tokens outside the answer's reach
PADDING_VALUES = (True, False, None, "longest", "max_length", "do_not_pad")


def _int_arg(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"question-answering: {name} must be an int, got {type(value).__name__} {value!r}")
    if value < minimum:
        raise ValueError(f"question-answering: {name} parameter should be >= {minimum} (got {value})")
    return int(value)


def _example(item: Any) -> tuple[str, str]:
    """(question, context) of one input, a dict with both keys; anything else fails here, naming what is wrong."""
    if not isinstance(item, dict):
        raise TypeError(f"question-answering: each input must be a dict with keys 'question' and 'context', "
                        f"got {type(item).__name__} {item!r:.80}")
    for key in ("question", "context"):
        if key not in item:
            raise KeyError(f"question-answering: the input has no {key!r}; give a dict with keys "
                           "{'question': ..., 'context': ...}")
        value = item[key]
        if value is None:
            raise ValueError(f"question-answering: `{key}` cannot be None")
        if not isinstance(value, str):
            raise TypeError(f"question-answering: `{key}` must be a string, got {type(value).__name__}")
        if not value or (key == "context" and not value.strip()):
            raise ValueError(f"question-answering: `{key}` cannot be empty")
    return item["question"], item["context"]


def _inputs(args: tuple, kwargs: dict) -> Any:
    """transformers 4's argument handling -> a dict, a list of dicts, or an iterator (passed through lazily)."""
    question, context = kwargs.pop("question", None), kwargs.pop("context", None)
    if args:
        if question is not None or context is not None:
            raise TypeError("question-answering: give the inputs either positionally or as question=/context=, "
                            "not both")
        if len(args) == 2 and all(isinstance(a, str) for a in args):
            return {"question": args[0], "context": args[1]}
        if len(args) > 1:
            return list(args)
        return args[0]
    for legacy in ("X", "data"):  # transformers 4's deprecated spellings
        if legacy in kwargs:
            return kwargs.pop(legacy)
    if question is None or context is None:
        missing = "question" if question is None else "context"
        raise ValueError(f"question-answering: missing `{missing}`; call qa(question=..., context=...) or "
                         "qa({'question': ..., 'context': ...})")
    if isinstance(question, str) and isinstance(context, str):
        return {"question": question, "context": context}
    if isinstance(question, (list, tuple)) and isinstance(context, str):
        return [{"question": q, "context": context} for q in question]
    if isinstance(question, (list, tuple)) and isinstance(context, (list, tuple)):
        if len(question) != len(context):
            raise ValueError(f"question-answering: {len(question)} questions but {len(context)} contexts; give "
                             "one context, or one per question")
        return [{"question": q, "context": c} for q, c in zip(question, context)]
    raise TypeError(f"question-answering: question/context must be strings or lists of strings, got "
                    f"{type(question).__name__} and {type(context).__name__}")


class QuestionAnsweringPipeline(Pipeline):
    task = "question-answering"
    per_token_outputs = ("start_logits", "end_logits")

    def sanitize_parameters(self, top_k: Any = None, topk: Any = None, doc_stride: Any = None,
                            max_answer_len: Any = 15, max_seq_len: Any = None, max_question_len: Any = 64,
                            handle_impossible_answer: Any = False, align_to_words: Any = True, padding: Any = None,
                            **kwargs: Any):
        if kwargs:
            raise TypeError(f"{self.task} pipeline got unexpected arguments: {', '.join(sorted(kwargs))}")
        if topk is not None and top_k is None:
            warnings.warn("topk parameter is deprecated, use top_k instead", UserWarning)
            top_k = topk
        top_k = _int_arg("top_k", 1 if top_k is None else top_k, 1)
        max_answer_len = _int_arg("max_answer_len", max_answer_len, 1)
        max_question_len = _int_arg("max_question_len", max_question_len, 1)
        if max_seq_len is None:
            max_seq_len = min(int(getattr(self.tokenizer, "model_max_length", 384) or 384), 384)
        max_seq_len = _int_arg("max_seq_len", max_seq_len, 1)
        doc_stride = _int_arg("doc_stride", min(max_seq_len // 2, 128) if doc_stride is None else doc_stride, 0)
        if doc_stride >= max_seq_len:
            raise ValueError(f"question-answering: `doc_stride` ({doc_stride}) must be smaller than `max_seq_len` "
                             f"({max_seq_len}): it is the overlap of two windows of max_seq_len tokens")
        if padding not in PADDING_VALUES:  # accepted as transformers does; padding changes no result
            raise ValueError(f"question-answering: padding={padding!r}: expected one of {PADDING_VALUES}")
        pre = {"doc_stride": doc_stride, "max_seq_len": max_seq_len, "max_question_len": max_question_len}
        post = {"top_k": top_k, "max_answer_len": max_answer_len,
                "handle_impossible_answer": bool(handle_impossible_answer), "align_to_words": bool(align_to_words)}
        return pre, post

    # --- the call ----------------------------------------------------------------------------------------
    def __call__(self, *args: Any, batch_size: int | None = None, **kwargs: Any) -> Any:
        inputs = _inputs(args, kwargs)
        pre, post = self.sanitize_parameters(**{**self.call_defaults, **kwargs})
        batch_size = batch_size or self.batch_size
        if isinstance(inputs, dict):
            return next(self._run([_example(inputs)], 1, pre, post))
        if isinstance(inputs, (list, tuple)):
            examples = [_example(item) for item in inputs]  # every input checked before any model call
            results = list(self._run(examples, batch_size, pre, post))
            return results[0] if len(results) == 1 else results  # transformers 4 unwraps a list of one
        if isinstance(inputs, Iterable) and not isinstance(inputs, str):
            return self._run(map(_example, inputs), batch_size, pre, post)  # lazily, as transformers
        raise ValueError(f"question-answering: inputs must be a dict {{'question': ..., 'context': ...}}, a list "
                         f"or an iterable of them, got {type(inputs).__name__} {inputs!r:.80}")

    def _run(self, examples: Iterable[tuple[str, str]], batch_size: int, pre: dict, post: dict) -> Iterator[Any]:
        """Inputs batch_size at a time; their windows run through the model batch_size at a time."""
        for chunk in batches(examples, batch_size):
            per_input = [self.preprocess(example, **pre) for example in chunk]
            windows = [window for items in per_input for window in items]
            outputs: list[dict[str, Any]] = []
            for start in range(0, len(windows), batch_size):
                outputs.extend(self._forward_batch(windows[start:start + batch_size]))
            for items in per_input:
                mine, outputs = outputs[:len(items)], outputs[len(items):]
                yield self.postprocess(mine, **post)

    # --- the steps -----------------------------------------------------------------------------------------
    def _encode(self, question: str, context: str, max_seq_len: int, doc_stride: int):
        question_first = self.tokenizer.padding_side != "left"
        pair = (question, context) if question_first else (context, question)
        return self.tokenizer(*pair, truncation="only_second" if question_first else "only_first",
                              max_length=max_seq_len, stride=doc_stride, return_overflowing_tokens=True,
                              return_offsets_mapping=True)

    def _fit_question(self, question: str, context: str, max_seq_len: int, doc_stride: int,
                      max_question_len: int) -> str:
        """The question itself, unless the context would need windows and the question leaves them no more than
        doc_stride tokens (the tokenizer cannot cut such windows): then it is cut to max_question_len tokens."""
        specials = self.tokenizer.num_special_tokens_to_add(pair=True)
        asked = self.tokenizer(question, add_special_tokens=False, return_offsets_mapping=True)
        room = max_seq_len - specials - len(asked["input_ids"])
        if room > doc_stride:
            return question
        whole = self.tokenizer(question, context, truncation=False, verbose=False)
        if len(whole["input_ids"]) <= max_seq_len:
            return question  # one window, nothing to cut
        if len(asked["input_ids"]) > max_question_len:
            question = question[:asked["offset_mapping"][max_question_len - 1][1]]
            room = max_seq_len - specials - max_question_len
        if room <= doc_stride:
            raise ValueError(f"question-answering: the question takes {max_seq_len - specials - room} tokens of "
                             f"max_seq_len={max_seq_len}, leaving {room} per window for the context; that must be "
                             f"more than doc_stride={doc_stride}. Raise max_seq_len or lower doc_stride or "
                             "max_question_len")
        return question

    def preprocess(self, inputs: tuple[str, str], doc_stride: int = 128, max_seq_len: int = 384,
                   max_question_len: int = 64) -> list[dict[str, Any]]:
        """One item per window: the model inputs, the window's tokenizers.Encoding, which tokens may be answers
        (`in_context`) and which take part in the softmax (`allowed`: the context and CLS tokens)."""
        question, context = inputs
        question = self._fit_question(question, context, max_seq_len, doc_stride, max_question_len)
        encoded = self._encode(question, context, max_seq_len, doc_stride)
        context_id = 1 if self.tokenizer.padding_side != "left" else 0
        cls_id = self.tokenizer.cls_token_id
        names = [name for name in self.model_input_names if name in encoded]
        windows = []
        for i, ids in enumerate(encoded["input_ids"]):
            in_context = np.array([sid == context_id for sid in encoded.sequence_ids(i)], dtype=bool)
            allowed = in_context | (np.array(ids) == cls_id) if cls_id is not None else in_context.copy()
            window = {name: encoded[name][i] for name in names}
            window.update(context=context, in_context=in_context, allowed=allowed, encoding=encoded.encodings[i])
            windows.append(window)
        if not any(w["in_context"].any() for w in windows):
            raise ValueError(f"question-answering: the `context` {context!r:.80} has no tokens")
        return windows

    def forward(self, model_inputs):
        outputs = self.model(**model_inputs)
        return {"start_logits": outputs.start_logits, "end_logits": outputs.end_logits}

    def postprocess(self, outputs: list[dict[str, Any]], top_k: int = 1, max_answer_len: int = 15,
                    handle_impossible_answer: bool = False, align_to_words: bool = True) -> Any:
        per_window = top_k * 2 + 10 if align_to_words else top_k  # aligning to words merges some candidates
        context_id = 1 if self.tokenizer.padding_side != "left" else 0
        min_null_score = 1000000.0
        answers: list[dict[str, Any]] = []
        for window in outputs:
            p_start = _softmax(window["start_logits"][0].float().numpy(), window["allowed"])
            p_end = _softmax(window["end_logits"][0].float().numpy(), window["allowed"])
            if handle_impossible_answer:
                min_null_score = min(min_null_score, float(p_start[0] * p_end[0]))
            starts, ends, scores = _best_spans(p_start, p_end, window["in_context"], max_answer_len, per_window)
            context, encoding = window["context"], window["encoding"]
            for s, e, score in zip(starts, ends, scores):
                start, end = _char_span(encoding, int(s), int(e), context_id, align_to_words)
                text = context[start:end]
                same = next((a for a in answers if a["answer"].lower() == text.lower()), None)
                if same is not None:
                    same["score"] += float(score)
                else:
                    answers.append({"score": float(score), "start": start, "end": end, "answer": text})
        if handle_impossible_answer:
            answers.append({"score": min_null_score, "start": 0, "end": 0, "answer": ""})
        answers = sorted(answers, key=lambda a: a["score"], reverse=True)[:top_k]
        return answers[0] if len(answers) == 1 else answers


def _softmax(logits: np.ndarray, allowed: np.ndarray) -> np.ndarray:
    """float32 softmax over the window, tokens not allowed set to transformers' -10000 first."""
    masked = np.where(allowed, logits, np.float32(MASKED_LOGIT)).astype(np.float32)
    shifted = np.exp(masked - masked.max())
    return shifted / shifted.sum()


def _best_spans(p_start: np.ndarray, p_end: np.ndarray, in_context: np.ndarray, max_answer_len: int,
                k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The k best spans (start <= end < start + max_answer_len, both in the context, not at position 0, which
    transformers reserves for the null answer), best first, and their float32 scores."""
    n = len(p_start)
    scores = np.outer(p_start, p_end).astype(np.float32)
    valid = np.triu(np.tril(np.ones((n, n), dtype=bool), max_answer_len - 1))
    valid &= in_context[:, None] & in_context[None, :]
    valid[0, :] = valid[:, 0] = False
    flat = np.flatnonzero(valid)
    order = np.argsort(-scores.ravel()[flat], kind="stable")[:k]
    starts, ends = np.unravel_index(flat[order], (n, n))
    return starts, ends, scores[starts, ends]


def _char_span(encoding, s: int, e: int, sequence_index: int, align_to_words: bool) -> tuple[int, int]:
    """Characters of the context covered by tokens s..e; with align_to_words, widened to whole words."""
    if align_to_words:
        start_word, end_word = encoding.token_to_word(s), encoding.token_to_word(e)
        if start_word is not None and end_word is not None:
            first = encoding.word_to_chars(start_word, sequence_index)
            last = encoding.word_to_chars(end_word, sequence_index)
            if first is not None and last is not None:
                return first[0], last[1]
    return encoding.offsets[s][0], encoding.offsets[e][1]
