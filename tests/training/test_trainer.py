"""transformers' Trainer with fastformers models: train (the loss goes down on a tiny learnable task), evaluate,
save_model, activation checkpointing, LoRA through peft; what is saved loads in transformers and in fastformers
with the same logits."""

import shutil

import pytest
import torch

from conftest import rel_err
from training_models import FAMILIES, batch_for, load_pair

import fastformers

transformers = pytest.importorskip("transformers")


def classification_data(n=48, seq=8, seed=0):
    """Label 1 when the first token is in the upper half of the vocabulary: learnable in a few dozen steps."""
    g = torch.Generator().manual_seed(seed)
    rows = []
    for _ in range(n):
        ids = torch.randint(3, 99, (seq,), generator=g)
        rows.append({"input_ids": ids, "attention_mask": torch.ones(seq, dtype=torch.long),
                     "labels": int(ids[0] >= 51)})
    return rows


def lm_data(name, n=12):
    """Rows of the family's batch, repeated: a causal / seq2seq LM memorises them."""
    batch = batch_for(name)
    return [{k: v[i % 3] for k, v in batch.items()} for i in range(n)]


def arguments(tmp_path, **kwargs):
    defaults = dict(output_dir=str(tmp_path / "out"), use_cpu=True, report_to=[], save_strategy="no", logging_steps=1,
                    per_device_train_batch_size=8, per_device_eval_batch_size=16, learning_rate=5e-3, seed=0)
    return transformers.TrainingArguments(**{**defaults, **kwargs})


def losses(trainer):
    return [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]


def test_trainer_trains_evaluates_and_saves(tmp_path):
    model, _, _ = load_pair("bert-cls", tmp_path, num_labels=2)
    data = classification_data()
    trainer = transformers.Trainer(model=model, args=arguments(tmp_path, max_steps=24), train_dataset=data,
                                   eval_dataset=data)
    before = trainer.evaluate()["eval_loss"]
    trainer.train()
    after = trainer.evaluate()["eval_loss"]
    assert after < 0.8 * before, (before, after)
    assert trainer.state.global_step == 24 and trainer.state.total_flos > 0  # num_parameters(exclude_embeddings)

    batch = {k: torch.stack([row[k] for row in data[:5]]) for k in ("input_ids", "attention_mask")}
    model.eval()
    with torch.no_grad():
        trained = model(**batch).logits

    # Trainer.save_model: transformers calls save_pretrained on its own classes only; for any other module it
    # writes the state dict (model.safetensors), which loads into both libraries with the config.
    trainer.save_model(str(tmp_path / "trainer-saved"))
    hf_config = transformers.AutoConfig.from_pretrained(tmp_path / "bert-AutoModelForSequenceClassification")
    theirs = transformers.AutoModelForSequenceClassification.from_pretrained(tmp_path / "trainer-saved",
                                                                             config=hf_config).eval()
    ours = fastformers.AutoModelForSequenceClassification.from_pretrained(tmp_path / "trainer-saved",
                                                                          config=model.config)
    with torch.no_grad():
        assert rel_err(theirs(**batch).logits, trained) <= 1e-5
        assert rel_err(ours(**batch).logits, trained) <= 1e-6

    # model.save_pretrained writes the complete folder (config.json included)
    model.save_pretrained(tmp_path / "saved")
    theirs = transformers.AutoModelForSequenceClassification.from_pretrained(tmp_path / "saved").eval()
    ours = fastformers.AutoModelForSequenceClassification.from_pretrained(tmp_path / "saved")
    with torch.no_grad():
        assert rel_err(theirs(**batch).logits, trained) <= 1e-5
        assert rel_err(ours(**batch).logits, trained) <= 1e-6


@pytest.mark.parametrize("name", ["llama", "t5"])
def test_trainer_on_language_models(name, tmp_path):
    """Causal and seq2seq LMs (labels shifted inside the model), with an evaluation in the middle of training:
    the loss keeps going down after the inference path fused the projections."""
    model, _, _ = load_pair(name, tmp_path)
    data = lm_data(name)
    args = arguments(tmp_path, max_steps=12, eval_strategy="steps", eval_steps=4, per_device_train_batch_size=4)
    trainer = transformers.Trainer(model=model, args=args, train_dataset=data, eval_dataset=data)
    trainer.train()
    evals = [entry["eval_loss"] for entry in trainer.state.log_history if "eval_loss" in entry]
    assert len(evals) == 3 and evals == sorted(evals, reverse=True), evals
    assert losses(trainer)[-1] < losses(trainer)[0]


@pytest.mark.filterwarnings("ignore:`gradient_checkpointing` is deprecated:FutureWarning")
def test_trainer_activation_checkpointing(tmp_path):
    """gradient_checkpointing=True (transformers 5's older name of activation_checkpointing): the blocks run
    again in the backward pass; the losses are those of the plain run, step for step."""
    def run(checkpointing):
        model, _, _ = load_pair("llama", tmp_path / str(checkpointing))
        calls = []
        for layer in model._layers():
            layer.register_forward_pre_hook(lambda module, args: calls.append(1))
        args = arguments(tmp_path, max_steps=3, per_device_train_batch_size=4, gradient_checkpointing=checkpointing)
        trainer = transformers.Trainer(model=model, args=args, train_dataset=lm_data("llama"))
        trainer.train()
        assert model.is_gradient_checkpointing == checkpointing
        return losses(trainer), len(calls)

    plain, plain_calls = run(False)
    checkpointed, checkpointed_calls = run(True)
    assert checkpointed_calls == 2 * plain_calls == 2 * 3 * FAMILIES["llama"][2]["num_hidden_layers"]
    assert checkpointed == pytest.approx(plain, rel=1e-6)


def test_trainer_with_peft_lora(tmp_path):
    """LoRA through Trainer (with checkpointing, which needs the frozen embeddings' output to require grad): the
    adapter Trainer saves loads on transformers' model and gives the same logits."""
    peft = pytest.importorskip("peft")
    model, _, path = load_pair("llama", tmp_path)
    config = peft.LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=["q_proj", "v_proj"],
                             task_type="CAUSAL_LM")
    lora = peft.get_peft_model(model, config)
    args = arguments(tmp_path, max_steps=10, per_device_train_batch_size=4, learning_rate=2e-2,
                     activation_checkpointing=True)
    trainer = transformers.Trainer(model=lora, args=args, train_dataset=lm_data("llama"))
    trainer.train()
    assert losses(trainer)[-1] < losses(trainer)[0]
    trainer.save_model(str(tmp_path / "adapter"))
    batch = batch_for("llama")
    lora.eval()
    with torch.no_grad():
        ours = lora(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    base = transformers.AutoModelForCausalLM.from_pretrained(path)
    theirs = peft.PeftModel.from_pretrained(base, tmp_path / "adapter").eval()
    with torch.no_grad():
        expected = theirs(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    real = batch["attention_mask"].bool()
    assert rel_err(ours[real], expected[real]) <= 1e-4


def test_trainer_checkpoints_and_resumes(tmp_path):
    """save_strategy="steps" with evaluations in between (the inference path fuses the projections, Llama's
    weights start in the CPU decode layout): the checkpoints are written, and resuming from one continues with
    the losses of the uninterrupted run."""
    def trainer(folder):
        model, _, _ = load_pair("llama", tmp_path / folder)
        args = arguments(tmp_path, max_steps=4, save_strategy="steps", save_steps=2, eval_strategy="steps",
                         eval_steps=1, per_device_train_batch_size=4)
        return transformers.Trainer(model=model, args=args, train_dataset=lm_data("llama"),
                                    eval_dataset=lm_data("llama"))

    uninterrupted = trainer("a")
    uninterrupted.train()
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["checkpoint-2", "checkpoint-4"]
    resumed = trainer("b")
    resumed.train(resume_from_checkpoint=str(tmp_path / "out" / "checkpoint-2"))
    assert losses(resumed) == pytest.approx(losses(uninterrupted), rel=1e-6)
    assert resumed.state.global_step == 4


@pytest.mark.parametrize("library", ["transformers", "fastformers"])
def test_trainer_with_a_tokenizer_as_processing_class(library, tmp_path):
    """A transformers tokenizer makes Trainer align the model config's special tokens (config.get_text_config());
    either library's tokenizer is saved next to the weights."""
    from fastformers.pipelines.defaults import default_embedding_model

    tokenizer = getattr(__import__(library), "AutoTokenizer").from_pretrained(default_embedding_model())
    model, _, _ = load_pair("bert-cls", tmp_path, num_labels=2)
    trainer = transformers.Trainer(model=model, args=arguments(tmp_path, max_steps=2),
                                   train_dataset=classification_data(16), processing_class=tokenizer)
    trainer.train()
    assert model.config.pad_token_id == tokenizer.pad_token_id
    trainer.save_model(str(tmp_path / "saved"))
    assert {"model.safetensors", "tokenizer.json", "tokenizer_config.json"} <= {p.name for p in
                                                                              (tmp_path / "saved").iterdir()}
    assert fastformers.AutoTokenizer.from_pretrained(tmp_path / "saved")("a b c")["input_ids"] == \
        tokenizer("a b c")["input_ids"]


def test_seq2seq_trainer_predicts_with_generate_as_transformers(tmp_path):
    """Seq2SeqTrainer with DataCollatorForSeq2Seq(model=...) and predict_with_generate: the same loss and the
    same generated tokens as with transformers' model of the same weights."""
    from fastformers.pipelines.defaults import default_embedding_model

    tokenizer = transformers.AutoTokenizer.from_pretrained(default_embedding_model())  # pads with id 0 = T5's pad
    rows = [{"input_ids": list(range(3, 3 + n)), "labels": list(range(10, 10 + n))} for n in (4, 6, 5, 7)]

    def predict(model):
        args = transformers.Seq2SeqTrainingArguments(
            output_dir=str(tmp_path / "out"), use_cpu=True, report_to=[], per_device_eval_batch_size=2,
            predict_with_generate=True, generation_max_length=6)
        trainer = transformers.Seq2SeqTrainer(model=model, args=args, eval_dataset=rows,
                                              data_collator=transformers.DataCollatorForSeq2Seq(tokenizer, model=model))
        return trainer.predict(rows)

    ours, theirs, _ = load_pair("t5", tmp_path)
    a, b = predict(ours), predict(theirs)
    assert a.predictions.tolist() == b.predictions.tolist()
    assert a.metrics["test_loss"] == pytest.approx(b.metrics["test_loss"], rel=1e-5)


@pytest.mark.parametrize("name", ["bert-mlm", "llama-tied", "t5"])
def test_trainer_checkpoints_models_with_tied_weights(name, tmp_path):
    """Tied embeddings (MLM heads, tied causal LMs, T5): Trainer writes its checkpoints and save_model folders as a
    bare safetensors state dict for models that are not transformers' classes, and safetensors refuses tensors
    that share memory; the tied names are separate tensors in the state dict, so the save works, and the folder
    loads into both libraries with the config and the same logits."""
    model, _, path = load_pair(name, tmp_path)
    data = lm_data(name)
    args = arguments(tmp_path, max_steps=4, save_strategy="steps", save_steps=2, per_device_train_batch_size=4)
    trainer = transformers.Trainer(model=model, args=args, train_dataset=data)
    trainer.train()
    assert (tmp_path / "out" / "checkpoint-2" / "model.safetensors").is_file()
    trainer.save_model(str(tmp_path / "trainer-saved"))
    tied = model.get_input_embeddings().weight
    assert model.get_output_embeddings().weight is tied  # the model itself stays tied
    batch = batch_for(name)  # (labels: T5 builds its decoder inputs from them)
    model.eval()
    _, task, _ = FAMILIES[name]
    # the folder lacks the configs (and transformers 5.25 cannot load a generative model's folder without a
    # generation_config.json even with config=): put the original ones beside the weights
    for config_file in ("config.json", "generation_config.json"):
        if (path / config_file).is_file():
            shutil.copy(path / config_file, tmp_path / "trainer-saved" / config_file)
    theirs = getattr(transformers, task).from_pretrained(tmp_path / "trainer-saved").eval()
    ours = getattr(fastformers, task).from_pretrained(tmp_path / "trainer-saved")
    with torch.no_grad():
        trained = model(**batch).logits
        # an encoder unpads at inference (ops.unpadding_pays): its logits agree with transformers' on real positions
        real = batch["attention_mask"].bool() if task == "AutoModelForMaskedLM" else slice(None)
        assert rel_err(theirs(**batch).logits[real], trained[real]) <= 1e-5
        assert rel_err(ours(**batch).logits, trained) <= 1e-6
