"""RoBERTa: BERT's encoder with positions counted from the padding index, and its own heads."""

from __future__ import annotations

import torch
from torch import nn

from .. import layers
from . import bert
from .bert import BertEmbeddings, BertModel, _Head


class RobertaConfig(bert.BertConfig):
    model_type = "roberta"
    defaults = dict(bert.BertConfig.defaults, vocab_size=50265, pad_token_id=1, bos_token_id=0, eos_token_id=2)


class RobertaEmbeddings(BertEmbeddings):
    """Positions start at padding_idx + 1 and padding tokens keep position padding_idx."""

    def __init__(self, config) -> None:
        super().__init__(config)
        self.padding_idx = config.pad_token_id
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, config.hidden_size,
                                                padding_idx=self.padding_idx)

    @property
    def max_positions(self) -> int:
        return self.position_embeddings.num_embeddings - self.padding_idx - 1

    def position_ids(self, input_ids, batch: int, seq: int, device) -> torch.Tensor:
        if input_ids is None:
            return torch.arange(self.padding_idx + 1, seq + self.padding_idx + 1, device=device)[None].expand(batch, -1)
        keep = input_ids.ne(self.padding_idx).int()
        return (torch.cumsum(keep, dim=1).type_as(keep) * keep).long() + self.padding_idx


class RobertaPreTrainedModel(bert.BertPreTrainedModel):
    config_class = RobertaConfig
    base_model_prefix = "roberta"
    embeddings_class = RobertaEmbeddings

    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        if isinstance(module, RobertaLMHead):
            nn.init.zeros_(module.bias)


class RobertaModel(RobertaPreTrainedModel, BertModel):
    pass


class _RobertaHead(RobertaPreTrainedModel, _Head):
    base_model_class = RobertaModel


class RobertaLMHead(nn.Module):
    def __init__(self, config) -> None:
        super().__init__()
        self.dense = layers.Linear(config.hidden_size, config.hidden_size)
        self.layer_norm = layers.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.decoder = layers.Linear(config.hidden_size, config.vocab_size)
        self.bias = self.decoder.bias
        self.act = layers.Activation("gelu")  # always erf-gelu, as RoBERTa

    def forward(self, x):
        x = self.act(self.dense(x))
        x = self.layer_norm(x)
        return self.decoder(x)


class RobertaClassificationHead(nn.Module):
    """dense + tanh + out_proj over the first (<s>) token, dropout before each linear."""

    def __init__(self, config) -> None:
        super().__init__()
        self.dense = layers.Linear(config.hidden_size, config.hidden_size)
        self.out_proj = layers.Linear(config.hidden_size, config.num_labels)


class RobertaForMaskedLM(_RobertaHead, bert.BertForMaskedLM):
    _tied_weights_keys = {
        "lm_head.decoder.weight": "roberta.embeddings.word_embeddings.weight",
        "lm_head.decoder.bias": "lm_head.bias",
    }

    def __init__(self, config) -> None:
        _Head.__init__(self, config)
        self.lm_head = RobertaLMHead(config)
        self.post_init()

    def get_output_embeddings(self):
        return self.lm_head.decoder

    @property
    def cls(self):
        return self.lm_head


class RobertaForSequenceClassification(_RobertaHead, bert.BertForSequenceClassification):
    add_pooling_layer = False

    def __init__(self, config) -> None:
        _Head.__init__(self, config)
        self.classifier = RobertaClassificationHead(config)
        self.post_init()

    def classify(self, enc):
        head = self.classifier
        x = self._dropout(enc.last_hidden_state[:, 0])
        x = torch.tanh(head.dense(x))
        return head.out_proj(self._dropout(x))


class RobertaForTokenClassification(_RobertaHead, bert.BertForTokenClassification):
    pass


class RobertaForQuestionAnswering(_RobertaHead, bert.BertForQuestionAnswering):
    pass


class RobertaForMultipleChoice(_RobertaHead, bert.BertForMultipleChoice):
    pass


MODEL_CLASSES = {
    "AutoModel": RobertaModel,
    "AutoModelForMaskedLM": RobertaForMaskedLM,
    "AutoModelForSequenceClassification": RobertaForSequenceClassification,
    "AutoModelForTokenClassification": RobertaForTokenClassification,
    "AutoModelForQuestionAnswering": RobertaForQuestionAnswering,
    "AutoModelForMultipleChoice": RobertaForMultipleChoice,
}
