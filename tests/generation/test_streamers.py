"""Streamers against transformers' on the same token streams: the same text pieces, printed the same way."""

from __future__ import annotations

from threading import Thread

import pytest
import torch

from fastformers.generation import TextIteratorStreamer, TextStreamer
from gen_models import model_pair, smollm2_tokenizers

transformers = pytest.importorskip("transformers")

TEXT = ("Hello world, this is a test.\nSecond line: naïve café 😀🎉 — 東京は日本の首都です。 "
        "The end<|im_end|>")


def pieces(streamer_class, tokenizer, prompt, tokens, **kwargs):
    """Feed the prompt, then the tokens one at a time; return the (text, stream_end) pieces."""
    got = []

    class Recording(streamer_class):
        def on_finalized_text(self, text, stream_end=False):
            got.append((text, stream_end))

    streamer = Recording(tokenizer, **kwargs)
    streamer.put(torch.tensor([prompt]))
    for t in tokens:
        streamer.put(torch.tensor([t]))
    streamer.end()
    return got


@pytest.mark.parametrize("kwargs", [dict(), dict(skip_prompt=True),
                                    dict(skip_prompt=True, skip_special_tokens=True)])
def test_text_streamer_pieces_match_transformers(kwargs):
    tok, their_tok = smollm2_tokenizers()
    ids = tok(TEXT, add_special_tokens=False)["input_ids"]
    prompt, tokens = ids[:3], ids[3:]
    ours = pieces(TextStreamer, tok, prompt, tokens, **kwargs)
    theirs = pieces(transformers.TextStreamer, their_tok, prompt, tokens, **kwargs)
    assert ours == theirs
    ending = "The end" if kwargs.get("skip_special_tokens") else "end<|im_end|>"
    assert "".join(text for text, _ in ours).endswith(ending)


def test_text_streamer_prints_like_transformers(capsys):
    tok, their_tok = smollm2_tokenizers()
    ids = tok(TEXT, add_special_tokens=False)["input_ids"]
    printed = []
    for cls, t in ((TextStreamer, tok), (transformers.TextStreamer, their_tok)):
        streamer = cls(t, skip_prompt=True)
        streamer.put(torch.tensor([ids[:2]]))
        for i in ids[2:]:
            streamer.put(torch.tensor([i]))
        streamer.end()
        printed.append(capsys.readouterr().out)
    assert printed[0] == printed[1] == tok.decode(ids[2:]) + "\n"


def test_streamer_rejects_batches():
    tok, _ = smollm2_tokenizers()
    with pytest.raises(ValueError, match="batch size 1"):
        TextStreamer(tok).put(torch.zeros(2, 3, dtype=torch.long))


def test_generate_streams_like_transformers(capsys):
    tok, their_tok = smollm2_tokenizers()
    ours, theirs = model_pair("llama-smol-vocab")
    ids = tok("Once upon a time", return_tensors="pt")["input_ids"]
    out = ours.generate(ids, max_new_tokens=12, streamer=TextStreamer(tok, skip_prompt=True))
    printed = capsys.readouterr().out
    ref = theirs.generate(ids, max_new_tokens=12, streamer=transformers.TextStreamer(their_tok, skip_prompt=True))
    assert torch.equal(out, ref)
    assert printed == capsys.readouterr().out
    assert printed == tok.decode(out[0, ids.shape[1]:]) + "\n"


def test_text_iterator_streamer_in_a_thread():
    tok, their_tok = smollm2_tokenizers()
    ours, theirs = model_pair("llama-smol-vocab")
    ids = tok("Once upon a time", return_tensors="pt")["input_ids"]
    results = {}
    for name, model, streamer in (("ours", ours, TextIteratorStreamer(tok, skip_prompt=True, timeout=30)),
                                  ("theirs", theirs, transformers.TextIteratorStreamer(their_tok, skip_prompt=True,
                                                                                       timeout=30))):
        thread = Thread(target=lambda m=model, s=streamer: results.setdefault(
            name + "-ids", m.generate(ids, max_new_tokens=12, streamer=s)))
        thread.start()
        results[name] = list(streamer)
        thread.join()
    assert results["ours"] == results["theirs"]
    assert "".join(results["ours"]) == tok.decode(results["ours-ids"][0, ids.shape[1]:])
