"""The PreTrainedModel methods fine-tuning code calls (Trainer, peft, training scripts), against transformers' on the
same models: parameter counts, embeddings get/set/resize with tying kept, input require-grads, generation inputs."""

import pytest
import torch

from conftest import rel_err
from training_models import batch_for, load_pair


@pytest.mark.parametrize("name", ["bert-mlm", "llama-tied", "t5", "bart"])
def test_num_parameters_match_transformers(name, tmp_path):
    ours, hf, _ = load_pair(name, tmp_path)
    for kwargs in ({}, {"exclude_embeddings": True}, {"only_trainable": True}):
        assert ours.num_parameters(**kwargs) == hf.num_parameters(**kwargs), kwargs
    for p in ours.parameters():
        p.requires_grad_(False)
    assert ours.num_parameters(only_trainable=True) == 0
    assert ours.main_input_name == hf.main_input_name == "input_ids"
    assert ours.supports_gradient_checkpointing and not ours.is_gradient_checkpointing


@pytest.mark.parametrize("name", ["bert-mlm", "llama", "llama-tied", "t5", "bart"])
def test_resize_token_embeddings_matches_transformers(name, tmp_path):
    ours, hf, _ = load_pair(name, tmp_path)
    tied = ours.get_output_embeddings().weight is ours.get_input_embeddings().weight
    old = ours.get_input_embeddings().weight.detach().clone()
    embedding = ours.resize_token_embeddings(104)
    hf.resize_token_embeddings(104)
    assert embedding is ours.get_input_embeddings() and embedding.weight.shape == (104, old.shape[1])
    assert torch.equal(embedding.weight[:99], old)
    assert ours.config.vocab_size == 104
    output = ours.get_output_embeddings()
    assert output.weight.shape[0] == 104 and output.out_features == 104
    assert (output.weight is embedding.weight) == tied
    batch = {k: v for k, v in batch_for(name).items() if k != "labels"}
    if "labels" in batch_for(name) and ours.config.is_encoder_decoder:
        batch["decoder_input_ids"] = torch.tensor([[2, 5, 7], [2, 9, 11], [2, 3, 4]])
    with torch.no_grad():
        a, b = ours(**batch).logits, hf(**batch).logits
    assert a.shape == b.shape and a.shape[-1] == 104
    real = batch["attention_mask"].bool() if not ours.config.is_encoder_decoder else slice(None)
    assert rel_err(a[real][..., :99], b[real][..., :99]) <= 1e-5  # the old vocabulary's rows are kept
    batch["input_ids"][0, 0] = 103  # a new token goes through
    with torch.no_grad():
        assert torch.isfinite(ours(**batch).logits).all()
    ours.save_pretrained(tmp_path / "resized")
    back = type(ours).from_pretrained(tmp_path / "resized")
    assert back.get_input_embeddings().num_embeddings == 104


def test_resize_keeps_bert_decoder_bias_tied_and_pads_to_multiple(tmp_path):
    ours, _, _ = load_pair("bert-mlm", tmp_path)
    ours.resize_token_embeddings(100, pad_to_multiple_of=8)
    assert ours.config.vocab_size == 104
    decoder = ours.get_output_embeddings()
    assert decoder.bias is ours.cls.predictions.bias and decoder.bias.shape == (104,)
    assert ours.num_parameters() == sum(p.numel() for p in ours.parameters())
    with pytest.raises(ValueError, match="pad_to_multiple_of"):
        ours.resize_token_embeddings(100, pad_to_multiple_of=0)


def test_set_input_and_output_embeddings(tmp_path):
    ours, _, _ = load_pair("llama", tmp_path)
    new = torch.nn.Embedding(99, 32)
    ours.set_input_embeddings(new)
    assert ours.get_input_embeddings() is new and ours.model.embed_tokens is new
    head = torch.nn.Linear(32, 99, bias=False)
    ours.set_output_embeddings(head)
    assert ours.get_output_embeddings() is head and ours.lm_head is head
    t5, _, _ = load_pair("t5", tmp_path / "t5")
    shared = torch.nn.Embedding(99, 32)
    t5.set_input_embeddings(shared)  # the encoder's and decoder's tables follow the shared one
    assert t5.shared is shared and t5.encoder.embed_tokens.weight is shared.weight
    assert t5.decoder.embed_tokens.weight is shared.weight


def test_enable_input_require_grads_over_frozen_embeddings(tmp_path):
    ours, _, _ = load_pair("bert-cls", tmp_path)
    for p in ours.parameters():
        p.requires_grad_(False)
    seen = []
    ours.bert.encoder.register_forward_pre_hook(lambda module, args: seen.append(args[0].requires_grad))
    batch = batch_for("bert-cls")
    ours(**batch)
    ours.enable_input_require_grads()
    ours(**batch)
    ours.disable_input_require_grads()
    ours(**batch)
    assert seen == [False, True, False]


def test_prepare_inputs_for_generation(tmp_path):
    ours, _, _ = load_pair("llama", tmp_path)
    ids = torch.tensor([[5, 6, 7, 8]])
    first = ours.prepare_inputs_for_generation(ids, attention_mask=torch.ones_like(ids))
    assert torch.equal(first["input_ids"], ids) and first["past_key_values"] is None
    with torch.no_grad():
        cache = ours(**first, use_cache=True).past_key_values
    longer = torch.tensor([[5, 6, 7, 8, 9]])
    step = ours.prepare_inputs_for_generation(longer, past_key_values=cache, attention_mask=torch.ones_like(longer))
    assert torch.equal(step["input_ids"], torch.tensor([[9]])) and step["past_key_values"] is cache
    with torch.no_grad():
        incremental = ours(**step).logits[:, -1]
        full = ours(longer).logits[:, -1]
    assert rel_err(incremental, full) <= 1e-5

