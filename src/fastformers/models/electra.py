"""ELECTRA: BERT's encoder under the prefix `electra`, embeddings of `embedding_size` (projected to
hidden_size by `embeddings_project` when the two differ), no pooler, and ELECTRA's own heads.

The encoder layers are bert.py's (checkpoint names agree: `electra.encoder.layer.N.attention.self.query`
...); the heads reuse bert.py's forward methods wherever transformers' ELECTRA computes the same thing.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import nn

from .. import layers
from ..modeling import PreTrainedModel
from ..outputs import MaskedLMOutput, _output
from . import bert
from ._common import token_loss
from .bert import BertEmbeddings, BertEncoder, BertModel, _flag, _Head

BaseModelOutputWithPastAndCrossAttentions = _output(
    "BaseModelOutputWithPastAndCrossAttentions",
    "last_hidden_state", "past_key_values", "hidden_states", "attentions", "cross_attentions",
)
ElectraForPreTrainingOutput = _output("ElectraForPreTrainingOutput", "loss", "logits", "hidden_states", "attentions")


class ElectraConfig(bert.BertConfig):
    model_type = "electra"
    defaults = dict(
        vocab_size=30522, embedding_size=128, hidden_size=256, num_hidden_layers=12, num_attention_heads=4,
        intermediate_size=1024, hidden_act="gelu", hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1,
        max_position_embeddings=512, type_vocab_size=2, initializer_range=0.02, layer_norm_eps=1e-12,
        summary_type="first", summary_use_proj=True, summary_activation="gelu", summary_last_dropout=0.1,
        pad_token_id=0, use_cache=True, classifier_dropout=None,
    )


class ElectraEmbeddings(BertEmbeddings):
    """BERT's embeddings (word + position + token type, LayerNorm, dropout) at width embedding_size."""

    def __init__(self, config) -> None:
        super().__init__(config, embedding_size=config.embedding_size)


class ElectraPreTrainedModel(bert.BertPreTrainedModel):
    config_class = ElectraConfig
    base_model_prefix = "electra"
    embeddings_class = ElectraEmbeddings


class ElectraModel(ElectraPreTrainedModel, BertModel):
    def __init__(self, config, add_pooling_layer: bool = False) -> None:
        # add_pooling_layer: accepted for the shared head constructor; ELECTRA has no pooler.
        if config.is_decoder:
            raise ValueError("ELECTRA with is_decoder=True (causal attention, ElectraForCausalLM) is not "
                             "supported by fastformers")
        PreTrainedModel.__init__(self, config)
        self.embeddings = self.embeddings_class(config)
        if config.embedding_size != config.hidden_size:
            self.embeddings_project = layers.Linear(config.embedding_size, config.hidden_size)
        self.encoder = BertEncoder(config)
        self.pooler = None
        self.post_init()

    def embed(self, input_ids, token_type_ids, position_ids, inputs_embeds):
        x = self.embeddings(input_ids, token_type_ids, position_ids, inputs_embeds)
        project = getattr(self, "embeddings_project", None)
        return x if project is None else project(x)

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None,
                inputs_embeds=None, output_attentions=None, output_hidden_states=None, return_dict=None, **kwargs):
        out = BertModel.forward(self, input_ids=input_ids, attention_mask=attention_mask,
                                token_type_ids=token_type_ids, position_ids=position_ids, inputs_embeds=inputs_embeds,
                                output_attentions=output_attentions, output_hidden_states=output_hidden_states,
                                return_dict=True)
        out = BaseModelOutputWithPastAndCrossAttentions(
            last_hidden_state=out.last_hidden_state, hidden_states=out.get("hidden_states"),
            attentions=out.get("attentions"))
        return out if _flag(return_dict, self.config.return_dict) else out.to_tuple()


# -- heads --------------------------------------------------------------------------------------
class _ElectraHead(ElectraPreTrainedModel, _Head):
    base_model_class = ElectraModel
    add_pooling_layer = False


class ElectraDiscriminatorPredictions(nn.Module):
    """dense + hidden_act + dense_prediction (one logit per token)."""

    def __init__(self, config) -> None:
        super().__init__()
        self.dense = layers.Linear(config.hidden_size, config.hidden_size)
        self.dense_prediction = layers.Linear(config.hidden_size, 1)
        self.act = layers.Activation(config.hidden_act)

    def forward(self, x):
        x = self.act(self.dense(x))
        return self.dense_prediction(x).squeeze(-1)


class ElectraGeneratorPredictions(nn.Module):
    """dense to embedding_size + gelu (always the erf form) + LayerNorm."""

    def __init__(self, config) -> None:
        super().__init__()
        self.LayerNorm = layers.LayerNorm(config.embedding_size, eps=config.layer_norm_eps)
        self.dense = layers.Linear(config.hidden_size, config.embedding_size)
        self.act = layers.Activation("gelu")

    def forward(self, x):
        return self.LayerNorm(self.act(self.dense(x)))


class ElectraClassificationHead(nn.Module):
    """First token -> dropout -> dense -> gelu -> dropout -> out_proj (applied by the head's classify)."""

    def __init__(self, config) -> None:
        super().__init__()
        self.dense = layers.Linear(config.hidden_size, config.hidden_size)
        self.out_proj = layers.Linear(config.hidden_size, config.num_labels)
        self.act = layers.Activation("gelu")  # gelu (erf) whatever hidden_act is


def _summary_activation(name):
    if not name or name == "linear":  # transformers: no string -> identity; "linear" is the identity too
        return lambda x, b: x if b is None else x + b
    return layers.Activation(name)


class ElectraSequenceSummary(nn.Module):
    """transformers' SequenceSummary as ELECTRA configures it: pick a vector per sequence
    (summary_type first / last / mean / cls_index (= last, as ELECTRA passes no index)), then
    first dropout, optional projection `summary`, activation, last dropout."""

    def __init__(self, config) -> None:
        super().__init__()
        self.summary_type = getattr(config, "summary_type", "last")
        if self.summary_type not in ("first", "last", "mean", "cls_index"):
            raise ValueError(f"summary_type={self.summary_type!r} is not supported (transformers does not implement "
                             f"'attn' either); use first, last, mean or cls_index")
        self.summary = None
        if getattr(config, "summary_use_proj", False):
            to_labels = getattr(config, "summary_proj_to_labels", False) and config.num_labels > 0
            self.summary = layers.Linear(config.hidden_size, config.num_labels if to_labels else config.hidden_size)
        self.act = _summary_activation(getattr(config, "summary_activation", None))
        self.first_dropout = getattr(config, "summary_first_dropout", 0) or 0
        self.last_dropout = getattr(config, "summary_last_dropout", 0) or 0

    def forward(self, x):
        if self.summary_type == "first":
            x = x[:, 0]
        elif self.summary_type == "mean":
            x = x.mean(dim=1)
        else:
            x = x[:, -1]
        if self.training and self.first_dropout > 0:
            x = F.dropout(x, self.first_dropout, training=True)
        x = self.act(x if self.summary is None else self.summary(x), None)
        if self.training and self.last_dropout > 0:
            x = F.dropout(x, self.last_dropout, training=True)
        return x


class ElectraForMaskedLM(_ElectraHead):
    _tied_weights_keys = {"generator_lm_head.weight": "electra.embeddings.word_embeddings.weight"}

    def __init__(self, config) -> None:
        super().__init__(config)
        self.generator_predictions = ElectraGeneratorPredictions(config)
        self.generator_lm_head = layers.Linear(config.embedding_size, config.vocab_size)
        self.post_init()

    def get_output_embeddings(self):
        return self.generator_lm_head

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None,
                inputs_embeds=None, labels=None, output_attentions=None, output_hidden_states=None,
                return_dict=None, **kwargs):
        enc = self._encode(input_ids, attention_mask, token_type_ids, position_ids, inputs_embeds,
                           output_attentions, output_hidden_states)
        x = self.generator_predictions(enc.last_hidden_state)
        logits = self.generator_lm_head(x)
        loss = token_loss(logits, labels) if labels is not None else None
        return self._finish(MaskedLMOutput, return_dict, enc, loss=loss, logits=logits)


class ElectraForPreTraining(_ElectraHead):
    """The replaced-token-detection discriminator: one logit per token."""

    def __init__(self, config) -> None:
        super().__init__(config)
        self.discriminator_predictions = ElectraDiscriminatorPredictions(config)
        self.post_init()

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None,
                inputs_embeds=None, labels=None, output_attentions=None, output_hidden_states=None,
                return_dict=None, **kwargs):
        enc = self._encode(input_ids, attention_mask, token_type_ids, position_ids, inputs_embeds,
                           output_attentions, output_hidden_states)
        logits = self.discriminator_predictions(enc.last_hidden_state)
        loss = None
        if labels is not None:
            seq = enc.last_hidden_state.shape[1]
            flat = logits.view(-1, seq)
            if attention_mask is not None:  # only tokens the mask keeps count, as transformers
                active = attention_mask.view(-1, seq) == 1
                loss = F.binary_cross_entropy_with_logits(flat[active], labels[active].to(logits.dtype))
            else:
                loss = F.binary_cross_entropy_with_logits(flat, labels.to(logits.dtype))
        return self._finish(ElectraForPreTrainingOutput, return_dict, enc, loss=loss, logits=logits)


class ElectraForSequenceClassification(_ElectraHead, bert.BertForSequenceClassification):
    add_pooling_layer = False

    def __init__(self, config) -> None:
        _Head.__init__(self, config)
        self.classifier = ElectraClassificationHead(config)
        self.post_init()

    def classify(self, enc):
        head = self.classifier
        x = self._dropout(enc.last_hidden_state[:, 0])
        x = head.act(head.dense(x))
        return head.out_proj(self._dropout(x))


class ElectraForTokenClassification(_ElectraHead, bert.BertForTokenClassification):
    pass


class ElectraForQuestionAnswering(_ElectraHead, bert.BertForQuestionAnswering):
    pass


class ElectraForMultipleChoice(_ElectraHead, bert.BertForMultipleChoice):
    add_pooling_layer = False

    def __init__(self, config) -> None:
        _Head.__init__(self, config)
        self.sequence_summary = ElectraSequenceSummary(config)
        self.classifier = layers.Linear(config.hidden_size, 1)
        # "last" and "mean" read padded positions (as transformers does): the encoder must compute them
        self.base_model.encoder.keep_padding = self.sequence_summary.summary_type != "first"
        self.post_init()

    def classify(self, enc):
        x = self.sequence_summary(enc.last_hidden_state)
        return self.classifier(x)


MODEL_CLASSES = {
    "AutoModel": ElectraModel,
    "AutoModelForPreTraining": ElectraForPreTraining,
    "AutoModelForMaskedLM": ElectraForMaskedLM,
    "AutoModelForSequenceClassification": ElectraForSequenceClassification,
    "AutoModelForTokenClassification": ElectraForTokenClassification,
    "AutoModelForQuestionAnswering": ElectraForQuestionAnswering,
    "AutoModelForMultipleChoice": ElectraForMultipleChoice,
}
