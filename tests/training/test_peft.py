"""peft LoRA on fastformers models with the usual target names: training changes the outputs, the adapter gives
the same outputs as on the transformers model (so an adapter trained here works there), inference without
autograd does not bypass it (the fused q/k/v path), merge_and_unload keeps the outputs, generate works."""

import pytest
import torch

from conftest import rel_err
from training_models import batch_for, load_pair

peft = pytest.importorskip("peft")  # a test dependency (pyproject's test extra); never skipped in CI

TARGETS = {  # family -> (LoRA target modules, peft task type)
    "bert-cls": (["query", "value"], "SEQ_CLS"),
    "distilbert-cls": (["q_lin", "v_lin"], "SEQ_CLS"),
    "llama": (["q_proj", "v_proj"], "CAUSAL_LM"),
    "qwen2": (["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"], "CAUSAL_LM"),
    "bart": (["q_proj", "v_proj"], "SEQ_2_SEQ_LM"),
    "t5": (["q", "v"], "SEQ_2_SEQ_LM"),
}


def lora(model, name, seed=0):
    targets, task = TARGETS[name]
    torch.manual_seed(seed)
    config = peft.LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=targets, task_type=task)
    return peft.get_peft_model(model, config)


def train(model, batch, steps=4, lr=2e-2):
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    losses = []
    for _ in range(steps):
        optimizer.zero_grad()
        loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


def logits(model, batch, grad=False):
    model.eval()
    with torch.set_grad_enabled(grad):
        return model(**batch).logits.detach()


@pytest.mark.parametrize("name", list(TARGETS))
def test_lora_trains_and_matches_transformers(name, tmp_path):
    ours, hf, path = load_pair(name, tmp_path)
    batch = batch_for(name)
    before = logits(ours, batch)
    model = lora(ours, name)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n or "classifier" in n or "score" in n for n in trainable)
    losses = train(model, batch)
    assert losses[-1] < losses[0]
    untrained = [n for n, p in model.named_parameters() if "lora_B" in n and not p.abs().max() > 0]
    assert not untrained, f"adapters the forward never reached: {untrained}"  # (lora_B starts at zero)
    after = logits(model, batch)
    assert rel_err(after, before) > 1e-3  # the adapter changed the outputs
    # the fused inference path (no autograd) goes through the adapters: same as with autograd on
    assert rel_err(logits(model, batch, grad=True), after) <= 1e-6

    # the same adapter on transformers' model of the same weights gives the same outputs
    theirs = lora(hf, name, seed=1)
    peft.set_peft_model_state_dict(theirs, peft.get_peft_model_state_dict(model))
    assert rel_err(after, logits(theirs, batch)) <= 1e-4

    merged = model.merge_and_unload()
    assert type(merged) is type(ours) and not any("lora_" in n for n, _ in merged.named_parameters())
    assert rel_err(logits(merged, batch), after) <= 1e-5


def test_adapter_saved_here_loads_on_transformers(tmp_path):
    import transformers

    ours, hf, path = load_pair("llama", tmp_path)
    batch = batch_for("llama")
    model = lora(ours, "llama")
    train(model, batch)
    model.save_pretrained(tmp_path / "adapter")
    base = transformers.AutoModelForCausalLM.from_pretrained(path)
    theirs = peft.PeftModel.from_pretrained(base, tmp_path / "adapter")
    assert rel_err(logits(model, batch), logits(theirs, batch)) <= 1e-4


def test_generate_through_the_peft_model(tmp_path):
    ours, hf, path = load_pair("llama", tmp_path)
    batch = batch_for("llama")
    model = lora(ours, "llama")
    train(model, batch, lr=5e-2)
    model.eval()
    prompt = batch["input_ids"][:1, :6]
    base_tokens = None
    with model.disable_adapter():
        base_tokens = model.generate(input_ids=prompt, max_new_tokens=6, do_sample=False)
    tokens = model.generate(input_ids=prompt, max_new_tokens=6, do_sample=False)
    assert tokens.shape == (1, 12) and torch.equal(tokens[:, :6], prompt)
    theirs = lora(hf, "llama", seed=1)
    peft.set_peft_model_state_dict(theirs, peft.get_peft_model_state_dict(model))
    theirs.eval()
    expected = theirs.generate(input_ids=prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=6,
                               do_sample=False, pad_token_id=0)
    assert tokens.tolist() == expected.tolist()
    assert base_tokens.tolist() != tokens.tolist()  # the adapter is what generate used
    # after merging, plain generate gives the same tokens
    merged = model.merge_and_unload()
    assert merged.generate(input_ids=prompt, max_new_tokens=6, do_sample=False).tolist() == tokens.tolist()


@pytest.mark.parametrize("name", ["t5", "bart"])
def test_seq2seq_generate_through_the_peft_model(name, tmp_path):
    ours, hf, _ = load_pair(name, tmp_path)
    batch = batch_for(name)
    model = lora(ours, name)
    train(model, batch, lr=5e-2)
    theirs = lora(hf, name, seed=1)
    peft.set_peft_model_state_dict(theirs, peft.get_peft_model_state_dict(model))
    inputs = dict(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], max_new_tokens=5,
                  do_sample=False, num_beams=1)
    tokens = model.eval().generate(**inputs)
    assert tokens.tolist() == theirs.eval().generate(**inputs).tolist()
