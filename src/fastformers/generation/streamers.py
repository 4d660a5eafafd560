"""Streamers: generate() hands them the prompt, then each new token, then calls end()."""

from __future__ import annotations

import unicodedata
from queue import Queue
from typing import Any, List, Optional


class BaseStreamer:
    def put(self, value) -> None:
        raise NotImplementedError()

    def end(self) -> None:
        raise NotImplementedError()


def _is_cjk(cp: int) -> bool:
    """CJK ideographs: printed as soon as they arrive (they are words on their own)."""
    return (0x4E00 <= cp <= 0x9FFF or 0x3400 <= cp <= 0x4DBF or 0x20000 <= cp <= 0x2A6DF or 0x2A700 <= cp <= 0x2B73F
            or 0x2B740 <= cp <= 0x2B81F or 0x2B820 <= cp <= 0x2CEAF or 0xF900 <= cp <= 0xFAFF
            or 0x2F800 <= cp <= 0x2FA1F)


class TextStreamer(BaseStreamer):
    """Print text to stdout as words complete (batch size 1).

    Tokens are decoded together since the last newline (whose token stays as context, so the next line keeps
    its leading space). New text is printed at once when it ends a line, ends in a CJK character or holds only
    letters, marks, digits and spaces (so long words and unspaced scripts stream); otherwise (symbols, which may
    start formatting or be half a character) up to the last space; the rest at end(). As transformers 5.25."""

    def __init__(self, tokenizer, skip_prompt: bool = False, **decode_kwargs: Any) -> None:
        self.tokenizer = tokenizer
        self.skip_prompt = skip_prompt
        self.decode_kwargs = decode_kwargs
        self.token_cache: List[int] = []
        self.print_len = 0
        self.next_tokens_are_prompt = True

    def put(self, value) -> None:
        if len(value.shape) > 1 and value.shape[0] > 1:
            raise ValueError("TextStreamer only supports batch size 1")
        if len(value.shape) > 1:
            value = value[0]
        if self.skip_prompt and self.next_tokens_are_prompt:
            self.next_tokens_are_prompt = False
            return
        self.token_cache.extend(value.tolist())
        text = self.tokenizer.decode(self.token_cache, **self.decode_kwargs)
        if text.endswith("\n"):
            printable = text[self.print_len:]
            self.token_cache = self.token_cache[-1:]
            self.print_len = len(self.tokenizer.decode(self.token_cache, **self.decode_kwargs))
        elif (text and _is_cjk(ord(text[-1]))) or all(
                c.isspace() or unicodedata.category(c)[0] in "LMN" for c in text[self.print_len:]):
            printable = text[self.print_len:]
            self.print_len += len(printable)
        else:
            printable = text[self.print_len:text.rfind(" ") + 1]
            self.print_len += len(printable)
        self.on_finalized_text(printable)

    def end(self) -> None:
        printable = ""
        if self.token_cache:
            text = self.tokenizer.decode(self.token_cache, **self.decode_kwargs)
            printable = text[self.print_len:]
            self.token_cache, self.print_len = [], 0
        self.next_tokens_are_prompt = True
        self.on_finalized_text(printable, stream_end=True)

    def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
        print(text, flush=True, end=None if stream_end else "")


class TextIteratorStreamer(TextStreamer):
    """Iterate over the text pieces from another thread:

        streamer = TextIteratorStreamer(tokenizer, skip_prompt=True)
        Thread(target=model.generate, kwargs=dict(**inputs, streamer=streamer)).start()
        for piece in streamer: ...

    `timeout`: seconds to wait for the next piece before queue.Empty is raised (None: forever)."""

    def __init__(self, tokenizer, skip_prompt: bool = False, timeout: Optional[float] = None,
                 **decode_kwargs: Any) -> None:
        super().__init__(tokenizer, skip_prompt, **decode_kwargs)
        self.text_queue: Queue = Queue()
        self.stop_signal = None
        self.timeout = timeout

    def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
        self.text_queue.put(text, timeout=self.timeout)
        if stream_end:
            self.text_queue.put(self.stop_signal, timeout=self.timeout)

    def __iter__(self):
        return self

    def __next__(self) -> str:
        value = self.text_queue.get(timeout=self.timeout)
        if value == self.stop_signal:
            raise StopIteration()
        return value


__all__ = ["BaseStreamer", "TextStreamer", "TextIteratorStreamer"]
