"""Pieces the architectures share: input checks, the encoder loop, head losses, and the layer call that
activation checkpointing hooks into."""

from __future__ import annotations

import operator
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.hooks import RemovableHandle

from .. import ops
from ..generation.cache import DynamicCache, EncoderDecoderCache, StaticCache, check_mask_values
from ..layers.linear import assignments


def call_layer(layer: nn.Module, *args):
    """layer(*args), or, when activation checkpointing is on for this layer
    (PreTrainedModel.activation_checkpointing_enable) and it trains with autograd on, the same call through
    torch.utils.checkpoint: its activations are dropped after the forward and recomputed in the backward."""
    checkpoint = layer.__dict__.get("_gradient_checkpointing_func")
    if checkpoint is None or not layer.__dict__.get("gradient_checkpointing") or not layer.training \
            or not torch.is_grad_enabled():
        return layer(*args)
    if any(isinstance(a, (DynamicCache, StaticCache, EncoderDecoderCache)) for a in args):
        # the recomputation would write the cache a second time
        raise ValueError("use_cache=True does not go with activation checkpointing in training: pass use_cache=False "
                         "(or call model.eval() / torch.no_grad() to decode)")
    return checkpoint(layer, *args)


class ModulePlan:
    """What a one-call op (ops.decode_layers, ops.encoder_layers) reads from a model's modules, and what tells that
    it still describes the model: the Linear-assignment epoch (layers/linear.py), the number of hook handles ever
    made (a new forward hook anywhere bumps it), and the identity of every module and tensor read (`watch`)."""

    def __init__(self) -> None:
        self.epoch, self.handles = assignments(), RemovableHandle.next_id
        self._tables: list = []  # (table, name, expected): table.get(name) must be expected
        self._names: list = []
        self._expected: list = []
        self.lasting = True  # valid while current() holds

    def current(self) -> bool:
        # the identity checks in C loops (map over dict.get and operator.is_): ~800 of them for a 30-layer model
        return (self.epoch == assignments() and self.handles == RemovableHandle.next_id
                and all(map(operator.is_, map(dict.get, self._tables, self._names), self._expected)))

    @property
    def checks(self) -> list:
        return list(zip(self._tables, self._names, self._expected))

    def check(self, table: dict, name: str, value) -> None:
        self._tables.append(table)
        self._names.append(name)
        self._expected.append(value)

    def watch(self, module: nn.Module, *names: str, kind: str = "_modules") -> None:
        table = getattr(module, kind)
        for name in names:
            self.check(table, name, table.get(name))


def current_plan(plans, owner, make):
    """plans[owner] (a WeakKeyDictionary of ModulePlans) while it is current, else make(owner), kept when lasting."""
    plan = plans.get(owner)
    if plan is None or not plan.current():
        plan = make(owner)
        if plan.lasting:
            plans[owner] = plan
        else:
            plans.pop(owner, None)
    return plan


def run_encoder(layers, x, attention_mask, output_attentions: bool, output_hidden_states: bool,
                attention_dropout: float = 0.0, keep_padding: bool = False):
    """Run encoder layers `layer(x, mask, output_attentions) -> (x, probs)` over a batch.

    A padded batch is unpadded first when that pays (`ops.unpadding_pays`: varlen attention on a fused
    kernel, e.g. CUDA with Triton, or the cpu backend's): the layers then see (1, real tokens, hidden) and the
    packing as their attention mask, and the outputs are padded back (zeros at padded positions, where
    transformers computes the pad tokens through every layer). Not when attention probabilities are needed
    (output_attentions, attention dropout in training), nor with `keep_padding`: a head whose real outputs
    depend on padded positions (question answering's span logits, a softmax over every position; a mean over
    every position).
    """
    packing = None
    needs_probs = output_attentions or (layers.training and attention_dropout > 0)
    if not needs_probs and not keep_padding and ops.unpadding_pays(x, attention_mask):
        x, packing = ops.unpad(x, attention_mask)
        attention_mask = packing
    hidden_states = (x,) if output_hidden_states else None
    attentions = () if output_attentions else None
    for layer in layers:
        x, probs = call_layer(layer, x, attention_mask, output_attentions)
        if output_hidden_states:
            hidden_states += (x,)
        if output_attentions:
            attentions += (probs,)
    if packing is not None:
        x = ops.pad(x, packing)
        hidden_states = tuple(ops.pad(h, packing) for h in hidden_states) if output_hidden_states else None
    return x, hidden_states, attentions


def check_inputs(input_ids: Optional[torch.Tensor], inputs_embeds: Optional[torch.Tensor], vocab_size: int,
                 max_positions: Optional[int], past_length: int = 0) -> Tuple[int, int]:
    """Validate ids and length at the model boundary; return (batch, seq_len)."""
    if (input_ids is None) == (inputs_embeds is None):
        raise ValueError("pass exactly one of input_ids and inputs_embeds")
    if input_ids is not None:
        if input_ids.dim() != 2:
            raise ValueError(f"input_ids must be (batch, seq_len), got shape {tuple(input_ids.shape)}")
        if input_ids.dtype.is_floating_point:
            raise TypeError(f"input_ids must hold integer token ids, got dtype {input_ids.dtype}")
        if input_ids.numel() and not torch.compiler.is_compiling():  # a host read: eager only
            lo, hi = torch.aminmax(input_ids)
            lo, hi = int(lo), int(hi)
            if hi >= vocab_size or lo < 0:
                bad = hi if hi >= vocab_size else lo
                raise IndexError(f"input_ids holds token id {bad}, outside the vocabulary of size {vocab_size}")
        batch, seq = input_ids.shape
    else:
        if inputs_embeds.dim() != 3:
            raise ValueError(f"inputs_embeds must be (batch, seq_len, hidden), got shape {tuple(inputs_embeds.shape)}")
        batch, seq = inputs_embeds.shape[:2]
    name = "input_ids" if input_ids is not None else "inputs_embeds"
    if batch == 0 or seq == 0:  # transformers fails inside attention ("cannot reshape tensor of 0 elements")
        what = "an empty batch (0 rows)" if batch == 0 else "no tokens (sequence length 0)"
        raise ValueError(f"{name} holds {what}: shape {tuple((input_ids if input_ids is not None else inputs_embeds).shape)}")
    if max_positions is not None and past_length + seq > max_positions:
        raise ValueError(
            f"sequence length {past_length + seq} exceeds max_position_embeddings={max_positions} of this model; "
            f"truncate the input (e.g. tokenizer(..., truncation=True, max_length={max_positions}))"
        )
    return batch, seq


def check_mask(attention_mask: Optional[torch.Tensor], batch: int, seq: int) -> Optional[torch.Tensor]:
    if attention_mask is None:
        return None
    if attention_mask.shape != (batch, seq):
        raise ValueError(f"attention_mask must have shape (batch, seq_len) = {(batch, seq)}, "
                         f"got {tuple(attention_mask.shape)}")
    check_mask_values(attention_mask)
    return attention_mask


def sequence_classification_loss(config, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """transformers' rule: regression for one label, cross-entropy for integer labels, else BCE."""
    num_labels = config.num_labels
    if config.problem_type is None:
        if num_labels == 1:
            config.problem_type = "regression"
        elif labels.dtype in (torch.long, torch.int):
            config.problem_type = "single_label_classification"
        else:
            config.problem_type = "multi_label_classification"
    if config.problem_type == "regression":
        if num_labels == 1:
            return F.mse_loss(logits.squeeze(), labels.squeeze().to(logits.dtype))
        return F.mse_loss(logits, labels.to(logits.dtype))
    if config.problem_type == "single_label_classification":
        return F.cross_entropy(logits.view(-1, num_labels), labels.view(-1))
    if config.problem_type == "multi_label_classification":
        return F.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype))
    raise ValueError(f"config.problem_type={config.problem_type!r} is not one of regression, "
                     f"single_label_classification, multi_label_classification")


def token_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy over every position whose label is not -100 (MLM, token classification)."""
    return F.cross_entropy(logits.view(-1, logits.shape[-1]), labels.view(-1).to(logits.device))


def span_loss(start_logits, end_logits, start_positions, end_positions) -> torch.Tensor:
    """Question answering: mean of start and end cross-entropies; positions outside are ignored."""
    ignored = start_logits.shape[1]
    start = start_positions.view(-1).clamp(0, ignored)
    end = end_positions.view(-1).clamp(0, ignored)
    return (F.cross_entropy(start_logits, start, ignore_index=ignored)
            + F.cross_entropy(end_logits, end, ignore_index=ignored)) / 2
