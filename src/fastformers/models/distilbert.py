"""DistilBERT: config, encoder and task heads. Weight names are those of Hugging Face checkpoints
(`distilbert.embeddings...`, `distilbert.transformer.layer.N.attention.q_lin`, ...).

Differences from BERT that matter for matching transformers: no token-type embeddings (a
`token_type_ids` keyword is accepted and ignored, as transformers does), LayerNorm eps fixed at 1e-12,
no dropout on the attention output projection, optional fixed sinusoidal position table, and the
classification heads read the first token through `pre_classifier` + ReLU instead of a pooler.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .. import layers
from ..configuration import PretrainedConfig
from ..modeling import PreTrainedModel
from ..outputs import (
    BaseModelOutput,
    MaskedLMOutput,
    MultipleChoiceModelOutput,
    QuestionAnsweringModelOutput,
    SequenceClassifierOutput,
    TokenClassifierOutput,
)
from ._common import (
    check_inputs,
    check_mask,
    run_encoder,
    sequence_classification_loss,
    span_loss,
    token_loss,
)
from .bert import _flag, _Head

_LN_EPS = 1e-12  # DistilBERT hard-codes its LayerNorm eps; it is not a config key


class DistilBertConfig(PretrainedConfig):
    model_type = "distilbert"
    attribute_map = {"hidden_size": "dim", "num_attention_heads": "n_heads", "num_hidden_layers": "n_layers"}
    defaults = dict(
        vocab_size=30522, max_position_embeddings=512, sinusoidal_pos_embds=False, n_layers=6, n_heads=12,
        dim=768, hidden_dim=4 * 768, dropout=0.1, attention_dropout=0.1, activation="gelu",
        initializer_range=0.02, qa_dropout=0.1, seq_classif_dropout=0.2, pad_token_id=0,
        tie_word_embeddings=True,
    )


def sinusoidal_table(n_pos: int, dim: int) -> torch.Tensor:
    """The fixed position table transformers writes for `sinusoidal_pos_embds=True`, as float32:
    angle(pos, j) = pos / 10000^(2*(j//2)/dim), sin on even features and cos on odd ones,
    evaluated in float64 and rounded once."""
    j = np.arange(dim)
    angles = np.arange(n_pos, dtype=np.float64)[:, None] / np.power(10000.0, 2 * (j // 2) / dim)[None, :]
    table = np.empty((n_pos, dim), dtype=np.float64)
    table[:, 0::2] = np.sin(angles[:, 0::2])
    table[:, 1::2] = np.cos(angles[:, 1::2])
    return torch.from_numpy(table).float()


# -- encoder ------------------------------------------------------------------------------------
class DistilBertPositionEmbeddings(nn.Embedding):
    """An nn.Embedding (checkpoint name `position_embeddings.weight`) that knows whether it holds the
    fixed sinusoidal table, so weight init (and filling a checkpoint's missing table) writes it."""

    def __init__(self, num_embeddings: int, dim: int, sinusoidal: bool) -> None:
        super().__init__(num_embeddings, dim)
        self.sinusoidal = bool(sinusoidal)


class DistilBertEmbeddings(nn.Module):
    def __init__(self, config) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(config.vocab_size, config.dim, padding_idx=config.pad_token_id)
        self.position_embeddings = DistilBertPositionEmbeddings(
            config.max_position_embeddings, config.dim, config.sinusoidal_pos_embds)
        self.LayerNorm = layers.LayerNorm(config.dim, eps=_LN_EPS)
        self.dropout_p = config.dropout

    @property
    def max_positions(self) -> int:
        return self.position_embeddings.num_embeddings

    def forward(self, input_ids, position_ids, inputs_embeds) -> torch.Tensor:
        if input_ids is not None:
            inputs_embeds = self.word_embeddings(input_ids)
        if position_ids is None:
            positions = self.position_embeddings.weight[: inputs_embeds.shape[1]]  # rows 0..seq-1
        else:
            positions = self.position_embeddings(position_ids)
        x = self.LayerNorm(inputs_embeds, positions)
        return F.dropout(x, self.dropout_p, training=True) if self.training and self.dropout_p > 0 else x


class DistilBertSelfAttention(nn.Module):
    def __init__(self, config) -> None:
        super().__init__()
        if config.dim % config.n_heads:
            raise ValueError(f"n_heads={config.n_heads} must divide dim={config.dim} evenly")
        self.n_heads = config.n_heads
        self.head_dim = config.dim // config.n_heads
        self.q_lin = layers.Linear(config.dim, config.dim)
        self.k_lin = layers.Linear(config.dim, config.dim)
        self.v_lin = layers.Linear(config.dim, config.dim)
        self.out_lin = layers.Linear(config.dim, config.dim)
        self.dropout_p = config.attention_dropout
        self.qkv = layers.FusedLinear(self, "q_lin", "k_lin", "v_lin")  # one GEMM at inference
        self.attn = layers.Attention(dropout_p=self.dropout_p)

    def forward(self, x, attention_mask, output_attentions: bool):
        batch, seq, _ = x.shape
        shape = (batch, seq, self.n_heads, self.head_dim)
        q, k, v = (t.view(shape).transpose(1, 2) for t in self.qkv(x))
        out, probs = self.attn(q, k, v, attention_mask, return_probs=output_attentions)
        out = out.transpose(1, 2).reshape(batch, seq, -1)
        return self.out_lin(out), probs


class DistilBertFFN(nn.Module):
    """lin1 + activation + lin2; the dropout after lin2 is fused into the following LayerNorm."""

    def __init__(self, config) -> None:
        super().__init__()
        self.lin1 = layers.Linear(config.dim, config.hidden_dim)
        self.lin2 = layers.Linear(config.hidden_dim, config.dim)
        self.act = layers.Activation(config.activation)

    def forward(self, x):
        return self.lin2(self.act(self.lin1(x)))


class DistilBertTransformerBlock(nn.Module):
    def __init__(self, config) -> None:
        super().__init__()
        self.attention = DistilBertSelfAttention(config)
        self.sa_layer_norm = layers.LayerNorm(config.dim, eps=_LN_EPS)
        self.ffn = DistilBertFFN(config)
        self.output_layer_norm = layers.LayerNorm(config.dim, eps=_LN_EPS)
        self.dropout_p = config.dropout

    def forward(self, x, attention_mask, output_attentions: bool):
        h, probs = self.attention(x, attention_mask, output_attentions)
        h = self.sa_layer_norm(h, x)  # no dropout here, as transformers
        y = self.output_layer_norm(self.ffn(h), h, self.dropout_p)
        return y, probs


class DistilBertTransformer(nn.Module):
    keep_padding = False  # True for a head that reads padded positions (run_encoder)

    def __init__(self, config) -> None:
        super().__init__()
        self.layer = nn.ModuleList(DistilBertTransformerBlock(config) for _ in range(config.n_layers))
        self.attention_dropout = config.attention_dropout

    def forward(self, x, attention_mask, output_attentions: bool, output_hidden_states: bool):
        return run_encoder(self.layer, x, attention_mask, output_attentions, output_hidden_states,
                           self.attention_dropout, self.keep_padding)


class DistilBertPreTrainedModel(PreTrainedModel):
    config_class = DistilBertConfig
    base_model_prefix = "distilbert"

    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        if isinstance(module, DistilBertPositionEmbeddings) and module.sinusoidal:
            table = sinusoidal_table(module.num_embeddings, module.embedding_dim)
            with torch.no_grad():
                module.weight.copy_(table.to(device=module.weight.device, dtype=module.weight.dtype))


class DistilBertModel(DistilBertPreTrainedModel):
    def __init__(self, config, add_pooling_layer: bool = False) -> None:
        # add_pooling_layer: accepted for the shared head constructor; DistilBERT has no pooler.
        super().__init__(config)
        self.embeddings = DistilBertEmbeddings(config)
        self.transformer = DistilBertTransformer(config)
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.embeddings.word_embeddings

    def get_position_embeddings(self) -> nn.Embedding:
        return self.embeddings.position_embeddings

    def forward(self, input_ids=None, attention_mask=None, inputs_embeds=None, position_ids=None,
                output_attentions=None, output_hidden_states=None, return_dict=None, **kwargs):
        """kwargs: ignored, as in transformers (a tokenizer's `token_type_ids` lands here)."""
        cfg = self.config
        batch, seq = check_inputs(input_ids, inputs_embeds, cfg.vocab_size, self.embeddings.max_positions)
        attention_mask = check_mask(attention_mask, batch, seq)
        if attention_mask is not None and bool(attention_mask.all()):
            attention_mask = None  # nothing masked: the unmasked path is faster
        output_attentions = _flag(output_attentions, cfg.output_attentions)
        output_hidden_states = _flag(output_hidden_states, cfg.output_hidden_states)

        x = self.embeddings(input_ids, position_ids, inputs_embeds)
        x, hidden_states, attentions = self.transformer(x, attention_mask, output_attentions, output_hidden_states)
        out = BaseModelOutput(last_hidden_state=x, hidden_states=hidden_states, attentions=attentions)
        return out if _flag(return_dict, cfg.return_dict) else out.to_tuple()


# -- heads --------------------------------------------------------------------------------------
class _DistilBertHead(DistilBertPreTrainedModel, _Head):
    """A head over `distilbert`. Signatures follow transformers' DistilBERT heads (positional order
    input_ids, attention_mask, inputs_embeds, labels, position_ids)."""

    base_model_class = DistilBertModel

    def _encode(self, input_ids, attention_mask, inputs_embeds, position_ids, output_attentions, output_hidden_states):
        return self.base_model(input_ids=input_ids, attention_mask=attention_mask, inputs_embeds=inputs_embeds,
                               position_ids=position_ids, output_attentions=output_attentions,
                               output_hidden_states=output_hidden_states, return_dict=True)

    def _dropout_p(self, x, p: float):
        return F.dropout(x, p, training=True) if self.training and p > 0 else x

    def _first_token_classifier(self, enc):
        """hidden[:, 0] -> pre_classifier -> ReLU -> dropout(seq_classif_dropout) -> classifier."""
        x = F.relu(self.pre_classifier(enc.last_hidden_state[:, 0]))
        x = self._dropout_p(x, self.config.seq_classif_dropout)
        return self.classifier(x)


class DistilBertForMaskedLM(_DistilBertHead):
    _tied_weights_keys = {"vocab_projector.weight": "distilbert.embeddings.word_embeddings.weight"}

    def __init__(self, config) -> None:
        super().__init__(config)
        self.vocab_transform = layers.Linear(config.dim, config.dim)
        self.vocab_layer_norm = layers.LayerNorm(config.dim, eps=_LN_EPS)
        self.vocab_projector = layers.Linear(config.dim, config.vocab_size)
        self.act = layers.Activation(config.activation)
        self.post_init()

    def get_output_embeddings(self):
        return self.vocab_projector

    def forward(self, input_ids=None, attention_mask=None, inputs_embeds=None, labels=None, position_ids=None,
                output_attentions=None, output_hidden_states=None, return_dict=None, **kwargs):
        enc = self._encode(input_ids, attention_mask, inputs_embeds, position_ids, output_attentions,
                           output_hidden_states)
        x = self.act(self.vocab_transform(enc.last_hidden_state))
        x = self.vocab_layer_norm(x)
        logits = self.vocab_projector(x)
        loss = token_loss(logits, labels) if labels is not None else None
        return self._finish(MaskedLMOutput, return_dict, enc, loss=loss, logits=logits)


class DistilBertForSequenceClassification(_DistilBertHead):
    def __init__(self, config) -> None:
        super().__init__(config)
        self.pre_classifier = layers.Linear(config.dim, config.dim)
        self.classifier = layers.Linear(config.dim, config.num_labels)
        self.post_init()

    def forward(self, input_ids=None, attention_mask=None, inputs_embeds=None, labels=None, position_ids=None,
                output_attentions=None, output_hidden_states=None, return_dict=None, **kwargs):
        enc = self._encode(input_ids, attention_mask, inputs_embeds, position_ids, output_attentions,
                           output_hidden_states)
        logits = self._first_token_classifier(enc)
        loss = sequence_classification_loss(self.config, logits, labels) if labels is not None else None
        return self._finish(SequenceClassifierOutput, return_dict, enc, loss=loss, logits=logits)


class DistilBertForTokenClassification(_DistilBertHead):
    def __init__(self, config) -> None:
        super().__init__(config)
        self.classifier = layers.Linear(config.dim, config.num_labels)
        self.post_init()

    def forward(self, input_ids=None, attention_mask=None, inputs_embeds=None, labels=None, position_ids=None,
                output_attentions=None, output_hidden_states=None, return_dict=None, **kwargs):
        enc = self._encode(input_ids, attention_mask, inputs_embeds, position_ids, output_attentions,
                           output_hidden_states)
        x = self._dropout_p(enc.last_hidden_state, self.config.dropout)
        logits = self.classifier(x)
        loss = token_loss(logits, labels) if labels is not None else None
        return self._finish(TokenClassifierOutput, return_dict, enc, loss=loss, logits=logits)


class DistilBertForQuestionAnswering(_DistilBertHead):
    def __init__(self, config) -> None:
        if config.num_labels != 2:
            raise ValueError(f"config.num_labels should be 2, but it is {config.num_labels}")
        super().__init__(config)
        self.qa_outputs = layers.Linear(config.dim, config.num_labels)
        self.base_model.transformer.keep_padding = True  # span logits span padded positions too (see BERT's)
        self.post_init()

    def forward(self, input_ids=None, attention_mask=None, inputs_embeds=None, start_positions=None,
                end_positions=None, position_ids=None, output_attentions=None, output_hidden_states=None,
                return_dict=None, **kwargs):
        enc = self._encode(input_ids, attention_mask, inputs_embeds, position_ids, output_attentions,
                           output_hidden_states)
        x = self._dropout_p(enc.last_hidden_state, self.config.qa_dropout)
        logits = self.qa_outputs(x)
        start_logits, end_logits = (t.squeeze(-1).contiguous() for t in logits.split(1, dim=-1))
        loss = None
        if start_positions is not None and end_positions is not None:
            loss = span_loss(start_logits, end_logits, start_positions, end_positions)
        return self._finish(QuestionAnsweringModelOutput, return_dict, enc, loss=loss,
                            start_logits=start_logits, end_logits=end_logits)


class DistilBertForMultipleChoice(_DistilBertHead):
    def __init__(self, config) -> None:
        super().__init__(config)
        self.pre_classifier = layers.Linear(config.dim, config.dim)
        self.classifier = layers.Linear(config.dim, 1)
        self.post_init()

    def forward(self, input_ids=None, attention_mask=None, inputs_embeds=None, labels=None, position_ids=None,
                output_attentions=None, output_hidden_states=None, return_dict=None, **kwargs):
        source = input_ids if input_ids is not None else inputs_embeds
        if source is None:
            raise ValueError("pass input_ids or inputs_embeds of shape (batch, num_choices, seq_len)")
        num_choices = source.shape[1]

        def flat(t):
            return None if t is None else t.reshape(-1, *t.shape[2:])

        enc = self._encode(flat(input_ids), flat(attention_mask), flat(inputs_embeds), flat(position_ids),
                           output_attentions, output_hidden_states)
        logits = self._first_token_classifier(enc).view(-1, num_choices)
        loss = F.cross_entropy(logits, labels) if labels is not None else None
        return self._finish(MultipleChoiceModelOutput, return_dict, enc, loss=loss, logits=logits)


MODEL_CLASSES = {
    "AutoModel": DistilBertModel,
    "AutoModelForMaskedLM": DistilBertForMaskedLM,
    "AutoModelForSequenceClassification": DistilBertForSequenceClassification,
    "AutoModelForTokenClassification": DistilBertForTokenClassification,
    "AutoModelForQuestionAnswering": DistilBertForQuestionAnswering,
    "AutoModelForMultipleChoice": DistilBertForMultipleChoice,
}
