"""XLM-RoBERTa: RoBERTa's architecture under its own model_type and checkpoint prefix."""

from __future__ import annotations

from . import roberta


class XLMRobertaConfig(roberta.RobertaConfig):
    model_type = "xlm-roberta"
    defaults = dict(roberta.RobertaConfig.defaults, vocab_size=30522)


class XLMRobertaPreTrainedModel(roberta.RobertaPreTrainedModel):
    config_class = XLMRobertaConfig
    base_model_prefix = "roberta"


class XLMRobertaModel(XLMRobertaPreTrainedModel, roberta.RobertaModel):
    pass


def _head(name: str, base: type, **extra) -> type:
    return type(name, (XLMRobertaPreTrainedModel, base), {"base_model_class": XLMRobertaModel, **extra})


XLMRobertaForMaskedLM = _head("XLMRobertaForMaskedLM", roberta.RobertaForMaskedLM)
XLMRobertaForSequenceClassification = _head("XLMRobertaForSequenceClassification", roberta.RobertaForSequenceClassification)
XLMRobertaForTokenClassification = _head("XLMRobertaForTokenClassification", roberta.RobertaForTokenClassification)
XLMRobertaForQuestionAnswering = _head("XLMRobertaForQuestionAnswering", roberta.RobertaForQuestionAnswering)
XLMRobertaForMultipleChoice = _head("XLMRobertaForMultipleChoice", roberta.RobertaForMultipleChoice)

MODEL_CLASSES = {
    "AutoModel": XLMRobertaModel,
    "AutoModelForMaskedLM": XLMRobertaForMaskedLM,
    "AutoModelForSequenceClassification": XLMRobertaForSequenceClassification,
    "AutoModelForTokenClassification": XLMRobertaForTokenClassification,
    "AutoModelForQuestionAnswering": XLMRobertaForQuestionAnswering,
    "AutoModelForMultipleChoice": XLMRobertaForMultipleChoice,
}
