"""BERT: config, encoder, and the task heads. Weight names are those of Hugging Face checkpoints.

The heads are written against `self.base_model`, so RoBERTa, XLM-RoBERTa and ELECTRA reuse them
with their own base model and prefix.
"""

from __future__ import annotations

import weakref
from typing import Optional

import torch
from torch import nn

from .. import layers, ops
from ..configuration import PretrainedConfig
from ..layers.activation import GELU_APPROXIMATIONS
from ..layers.linear import hooked, plain
from ..modeling import PreTrainedModel
from ..ops.encoder import (
    ACTS,
    BLOCK8,
    BLOCK8_PANELS,
    F32_PACKED,
    FLOAT,
    PACKED,
    W8A8,
    W8A8_PACKED,
    EncoderWeights,
    block8_usable,
    encoder_layers_cpu,
    f32_packing_preferred,
    pack_blockwise8,
    pack_q8,
    pack_w8a8,
    w8a8_packed_usable,
)
from ..ops.linear import PackCheck, packed_weight
from ..outputs import (
    BaseModelOutputWithPoolingAndCrossAttentions,
    MaskedLMOutput,
    MultipleChoiceModelOutput,
    QuestionAnsweringModelOutput,
    SequenceClassifierOutput,
    TokenClassifierOutput,
)
from ._common import (
    ModulePlan,
    check_inputs,
    current_plan,
    check_mask,
    run_encoder,
    sequence_classification_loss,
    span_loss,
    token_loss,
)


class BertConfig(PretrainedConfig):
    model_type = "bert"
    defaults = dict(
        vocab_size=30522, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
        intermediate_size=3072, hidden_act="gelu", hidden_dropout_prob=0.1,
        attention_probs_dropout_prob=0.1, max_position_embeddings=512, type_vocab_size=2,
        initializer_range=0.02, layer_norm_eps=1e-12, pad_token_id=0, classifier_dropout=None,
    )


# -- encoder ------------------------------------------------------------------------------------
class BertEmbeddings(nn.Module):
    def __init__(self, config, embedding_size: Optional[int] = None) -> None:
        super().__init__()
        size = embedding_size or config.hidden_size
        self.word_embeddings = nn.Embedding(config.vocab_size, size, padding_idx=config.pad_token_id)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, size)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, size)
        self.LayerNorm = layers.LayerNorm(size, eps=config.layer_norm_eps)
        self.dropout_p = config.hidden_dropout_prob

    @property
    def max_positions(self) -> int:
        return self.position_embeddings.num_embeddings

    def position_ids(self, input_ids, batch: int, seq: int, device) -> torch.Tensor:
        return torch.arange(seq, device=device)[None]

    def forward(self, input_ids, token_type_ids, position_ids, inputs_embeds) -> torch.Tensor:
        if inputs_embeds is None:
            inputs_embeds = self.word_embeddings(input_ids)
        batch, seq = inputs_embeds.shape[:2]
        if position_ids is None:
            position_ids = self.position_ids(input_ids, batch, seq, inputs_embeds.device)
        extra = self.position_embeddings(position_ids)
        if token_type_ids is None:
            extra = extra + self.token_type_embeddings.weight[0]
        else:
            extra = extra + self.token_type_embeddings(token_type_ids)
        x = self.LayerNorm(inputs_embeds, extra)
        return nn.functional.dropout(x, self.dropout_p, training=True) if self.training else x


class BertSelfAttention(nn.Module):
    def __init__(self, config) -> None:
        super().__init__()
        if config.hidden_size % config.num_attention_heads:
            raise ValueError(f"hidden_size={config.hidden_size} is not a multiple of "
                             f"num_attention_heads={config.num_attention_heads}")
        self.num_heads = config.num_attention_heads
        self.head_dim = config.hidden_size // config.num_attention_heads
        inner = self.num_heads * self.head_dim
        self.query = layers.Linear(config.hidden_size, inner)
        self.key = layers.Linear(config.hidden_size, inner)
        self.value = layers.Linear(config.hidden_size, inner)
        self.dropout_p = config.attention_probs_dropout_prob
        self.qkv = layers.FusedLinear(self, "query", "key", "value")
        self.attn = layers.Attention(dropout_p=self.dropout_p)

    def forward(self, x, attention_mask, output_attentions: bool):
        batch, seq, _ = x.shape
        shape = (batch, seq, self.num_heads, self.head_dim)
        q, k, v = (t.view(shape).transpose(1, 2) for t in self.qkv(x))
        out, probs = self.attn(q, k, v, attention_mask, return_probs=output_attentions)
        return out.transpose(1, 2).reshape(batch, seq, -1), probs


class BertSelfOutput(nn.Module):
    """dense, then LayerNorm(dropout(.) + residual) in one op. Also BertOutput's shape."""

    def __init__(self, config, in_features: Optional[int] = None) -> None:
        super().__init__()
        self.dense = layers.Linear(in_features or config.hidden_size, config.hidden_size)
        self.LayerNorm = layers.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout_p = config.hidden_dropout_prob

    def forward(self, h, residual):
        return self.LayerNorm(self.dense(h), residual, self.dropout_p)


class BertAttention(nn.Module):
    def __init__(self, config) -> None:
        super().__init__()
        self.self = BertSelfAttention(config)
        self.output = BertSelfOutput(config)

    def forward(self, x, attention_mask, output_attentions: bool):
        h, probs = self.self(x, attention_mask, output_attentions)
        return self.output(h, x), probs


class BertIntermediate(nn.Module):
    def __init__(self, config) -> None:
        super().__init__()
        self.dense = layers.Linear(config.hidden_size, config.intermediate_size)
        self.act = layers.Activation(config.hidden_act)

    def forward(self, x):
        return self.act.after(self.dense, x)


class BertOutput(BertSelfOutput):
    def __init__(self, config) -> None:
        super().__init__(config, in_features=config.intermediate_size)


class BertLayer(nn.Module):
    def __init__(self, config) -> None:
        super().__init__()
        self.attention = BertAttention(config)
        self.intermediate = BertIntermediate(config)
        self.output = BertOutput(config)

    def forward(self, x, attention_mask, output_attentions: bool):
        h, probs = self.attention(x, attention_mask, output_attentions)
        return self.output(self.intermediate(h), h), probs


class BertEncoder(nn.Module):
    keep_padding = False  # True for a head that reads padded positions (run_encoder)

    def __init__(self, config) -> None:
        super().__init__()
        self.layer = nn.ModuleList(BertLayer(config) for _ in range(config.num_hidden_layers))
        self.attention_dropout = config.attention_probs_dropout_prob

    def forward(self, x, attention_mask, output_attentions: bool, output_hidden_states: bool):
        if not (output_attentions or output_hidden_states or self.training) and x.device.type == "cpu" and (
                attention_mask is None or not self.keep_padding):
            out = self._one_call(x, attention_mask)
            if out is not None:
                return out, None, None
        return run_encoder(self.layer, x, attention_mask, output_attentions, output_hidden_states,
                           self.attention_dropout, self.keep_padding)

    def _one_call(self, x, attention_mask):
        """Every layer in one C++ call (ops.encoder_layers) when its cpu kernel takes them, else None: the layers
        run one by one. A padded batch is unpadded first (no pad token is computed) and padded back."""
        plan = _encoder_plan(self)
        if plan.weights is None:
            return None
        rest = (plan.weights.weights, plan.weights.formats, plan.heads, plan.eps, plan.act)
        if ops.encoder_layers.choose(x.device.type, (x, None) + rest) != "cpu":  # (it asks about x and the weights)
            return None
        batch, seq, hidden = x.shape
        if attention_mask is None:
            tokens, packing = x.reshape(batch * seq, hidden), None
            cu_seqlens = torch.arange(0, (batch + 1) * seq, seq)
        else:
            flat, packing = ops.unpad(x, attention_mask)
            tokens, cu_seqlens = flat[0], packing.cu_seqlens
        out = encoder_layers_cpu(tokens, cu_seqlens, *rest)
        return out.view(batch, seq, hidden) if packing is None else ops.pad(out[None], packing)


# -- the one-call encoder: what ops.encoder_layers reads from a BertEncoder's modules ---------------------------------
class _EncoderPlan(ModulePlan):
    """EncoderWeights of an encoder's layers (None: they cannot run in one call, `reason` says why), valid while
    current() holds: ModulePlan's checks, and that oneDNN's packed copies still match their float weights."""

    def __init__(self, encoder: BertEncoder) -> None:
        super().__init__()
        self.weights: Optional[EncoderWeights] = None
        self.packs = PackCheck()
        self.heads = self.eps = self.act = None
        self.reason = self._build(encoder)
        self.packs.finish()

    def current(self) -> bool:
        return super().current() and self.packs.current()

    def _linear(self, weight, bias) -> Optional[tuple]:
        if isinstance(weight, ops.QuantizedWeight):
            n, k = weight.shape
            if weight.method == "blockwise_a8":
                if weight.bits != 8 or weight.group != 32 or weight.mins is not None or k % 32:
                    return None
                if n % 32 == 0 and block8_usable():
                    return pack_blockwise8(weight) + (bias, BLOCK8)  # repacked once per plan, read-only
                if f32_packing_preferred():  # AVX2 without AVX-512: gemm_f32.cpp's gemm_block8
                    return pack_q8(weight.qweight), weight.scales.float().t().contiguous(), bias, BLOCK8_PANELS
                return None
            if weight.method != "w8a8" or weight.scales.dtype != torch.float32 or weight.qweight.dtype != torch.int8:
                return None
            if n % 32 == 0 and k % 32 == 0 and k <= 32768 and w8a8_packed_usable():
                return pack_w8a8(weight) + (bias, W8A8_PACKED)  # the same sums by VNNI or AVX2 tiles
            return weight.qweight.contiguous(), weight.scales.reshape(-1).contiguous(), bias, W8A8
        if not isinstance(weight, torch.Tensor) or weight.dtype != torch.float32:
            return None
        f32 = f32_packing_preferred()
        packed = packed_weight(weight, "gemm_f32" if f32 else "onednn")
        if packed is None or isinstance(packed, ops.QuantizedWeight):
            return weight, None, bias, FLOAT
        self.packs.add(weight)
        return packed, None, bias, (F32_PACKED if f32 else PACKED)

    def _build(self, encoder: BertEncoder) -> Optional[str]:
        self.watch(encoder, "layer")
        self.watch(encoder.layer, *encoder.layer._modules)
        weights, eps, heads, acts = EncoderWeights(), set(), set(), set()
        for layer in encoder.layer:
            attention, intermediate, output = (getattr(layer, name, None) for name in ("attention", "intermediate",
                                                                                        "output"))
            self_attn, self_out = getattr(attention, "self", None), getattr(attention, "output", None)
            expected = ((layer, BertLayer), (attention, BertAttention), (self_attn, BertSelfAttention),
                        (self_out, BertSelfOutput), (intermediate, BertIntermediate), (output, BertOutput))
            if any(type(module) is not kind for module, kind in expected):
                return "a layer is not BERT's own"
            if hooked(tuple(layer.modules())):
                self.lasting = False  # removing a hook leaves no trace to watch: look again at the next call
                return "a module of a layer has forward hooks"
            norms = (self_out.LayerNorm, output.LayerNorm)
            if (any(type(n) is not layers.LayerNorm or n.weight is None or n.bias is None for n in norms)
                    or type(self_attn.attn) is not layers.Attention or self_attn.attn.scale is not None
                    or self_attn.attn.causal or type(intermediate.act) is not layers.Activation
                    or intermediate.act.name not in GELU_APPROXIMATIONS):
                return "a LayerNorm, the attention or the activation is not one the one-call encoder runs"
            for module in (layer, attention, self_attn, self_out, intermediate, output, intermediate.act,
                           self_attn.attn):
                self.watch(module, *module._modules)
            for norm in norms:
                self.watch(norm, "weight", "bias", kind="_parameters")
                self.check(norm.__dict__, "eps", norm.eps)
                eps.add(norm.eps)
            fused = self_attn.qkv.fused_now()
            if fused is None:
                return "q/k/v are not fused (a wrapped or hooked linear, or formats that differ)"
            self.check(self_attn.qkv.__dict__, "weight", fused[0])
            linears = [self._linear(*fused)]
            for dense in (self_out.dense, intermediate.dense, output.dense):
                if not plain(dense):
                    return f"{type(dense).__name__} is not a plain linear"
                self.watch(dense, *dense._parameters, kind="_parameters")
                linears.append(self._linear(dense.weight, dense.bias))
            if any(lin is None for lin in linears):
                return ("a weight format the one-call encoder does not take (float32, W8A8, or blockwise_a8 int8 in groups "
                        "of 32 on a CPU with AVX-512 VNNI or AVX2)")
            weights.add_layer(linears, [p.detach() for n in norms for p in (n.weight, n.bias)])
            heads.add(self_attn.num_heads)
            self.check(intermediate.act.__dict__, "name", intermediate.act.name)
            acts.add(ACTS[GELU_APPROXIMATIONS[intermediate.act.name]])
        if len(eps) != 1 or len(heads) != 1 or len(acts) != 1:
            return "the LayerNorms' eps, the head counts or the activations differ between layers"
        self.weights, self.eps, self.heads, self.act = weights, eps.pop(), heads.pop(), acts.pop()
        return None


_encoder_plans: "weakref.WeakKeyDictionary[BertEncoder, _EncoderPlan]" = weakref.WeakKeyDictionary()


def _encoder_plan(encoder: BertEncoder) -> _EncoderPlan:
    return current_plan(_encoder_plans, encoder, _EncoderPlan)


class BertPooler(nn.Module):
    def __init__(self, config) -> None:
        super().__init__()
        self.dense = layers.Linear(config.hidden_size, config.hidden_size)

    def forward(self, x):
        return torch.tanh(self.dense(x[:, 0]))


def _flag(value: Optional[bool], default: bool) -> bool:
    return default if value is None else value


class BertPreTrainedModel(PreTrainedModel):
    config_class = BertConfig
    base_model_prefix = "bert"
    embeddings_class = BertEmbeddings

    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        if isinstance(module, BertLMPredictionHead):
            nn.init.zeros_(module.bias)


class BertModel(BertPreTrainedModel):
    def __init__(self, config, add_pooling_layer: bool = True) -> None:
        super().__init__(config)
        self.embeddings = self.embeddings_class(config)
        self.encoder = BertEncoder(config)
        self.pooler = BertPooler(config) if add_pooling_layer else None
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.embeddings.word_embeddings

    def embed(self, input_ids, token_type_ids, position_ids, inputs_embeds):
        return self.embeddings(input_ids, token_type_ids, position_ids, inputs_embeds)

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None,
                inputs_embeds=None, output_attentions=None, output_hidden_states=None, return_dict=None, **kwargs):
        cfg = self.config
        batch, seq = check_inputs(input_ids, inputs_embeds, cfg.vocab_size, self.embeddings.max_positions)
        if token_type_ids is not None and token_type_ids.numel() and int(token_type_ids.max()) >= cfg.type_vocab_size:
            raise IndexError(f"token_type_ids holds {int(token_type_ids.max())}, but type_vocab_size is {cfg.type_vocab_size}")
        attention_mask = check_mask(attention_mask, batch, seq)
        if attention_mask is not None and bool(attention_mask.all()):
            attention_mask = None  # nothing masked: the unmasked path is faster
        output_attentions = _flag(output_attentions, cfg.output_attentions)
        output_hidden_states = _flag(output_hidden_states, cfg.output_hidden_states)

        x = self.embed(input_ids, token_type_ids, position_ids, inputs_embeds)
        x, hidden_states, attentions = self.encoder(x, attention_mask, output_attentions, output_hidden_states)
        pooled = self.pooler(x) if self.pooler is not None else None
        out = BaseModelOutputWithPoolingAndCrossAttentions(
            last_hidden_state=x, pooler_output=pooled, hidden_states=hidden_states, attentions=attentions)
        return out if _flag(return_dict, cfg.return_dict) else out.to_tuple()


# -- heads --------------------------------------------------------------------------------------
class _Head(BertPreTrainedModel):
    """A task head over `base_model_class`, stored under `base_model_prefix` as in checkpoints."""

    base_model_class = BertModel
    add_pooling_layer = False

    def __init__(self, config) -> None:
        super().__init__(config)
        setattr(self, self.base_model_prefix, self.base_model_class(config, add_pooling_layer=self.add_pooling_layer))

    def _encode(self, input_ids, attention_mask, token_type_ids, position_ids, inputs_embeds,
                output_attentions, output_hidden_states):
        return self.base_model(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
                               position_ids=position_ids, inputs_embeds=inputs_embeds,
                               output_attentions=output_attentions, output_hidden_states=output_hidden_states,
                               return_dict=True)

    def _finish(self, output_cls, return_dict, encoded, **fields):
        out = output_cls(**fields, hidden_states=encoded.get("hidden_states"), attentions=encoded.get("attentions"))
        return out if _flag(return_dict, self.config.return_dict) else out.to_tuple()

    def _dropout(self, x):
        p = self.config.classifier_dropout
        p = self.config.hidden_dropout_prob if p is None else p
        return nn.functional.dropout(x, p, training=True) if self.training and p > 0 else x


class BertPredictionHeadTransform(nn.Module):
    def __init__(self, config) -> None:
        super().__init__()
        self.dense = layers.Linear(config.hidden_size, config.hidden_size)
        self.act = layers.Activation(config.hidden_act)
        self.LayerNorm = layers.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, x):
        return self.LayerNorm(self.act(self.dense(x)))


class BertLMPredictionHead(nn.Module):
    def __init__(self, config) -> None:
        super().__init__()
        self.transform = BertPredictionHeadTransform(config)
        self.decoder = layers.Linear(config.hidden_size, config.vocab_size)
        self.bias = self.decoder.bias  # one parameter under both checkpoint names

    def forward(self, x):
        return self.decoder(self.transform(x))


class BertOnlyMLMHead(nn.Module):
    def __init__(self, config) -> None:
        super().__init__()
        self.predictions = BertLMPredictionHead(config)

    def forward(self, x):
        return self.predictions(x)


class BertForMaskedLM(_Head):
    _tied_weights_keys = {
        "cls.predictions.decoder.weight": "bert.embeddings.word_embeddings.weight",
        "cls.predictions.decoder.bias": "cls.predictions.bias",
    }
    _keys_to_ignore_on_load_unexpected = (r"pooler", r"seq_relationship")

    def __init__(self, config) -> None:
        super().__init__(config)
        self.cls = BertOnlyMLMHead(config)
        self.post_init()

    def get_output_embeddings(self):
        return self.cls.predictions.decoder

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None,
                inputs_embeds=None, labels=None, output_attentions=None, output_hidden_states=None,
                return_dict=None, **kwargs):
        enc = self._encode(input_ids, attention_mask, token_type_ids, position_ids, inputs_embeds,
                           output_attentions, output_hidden_states)
        logits = self.cls(enc.last_hidden_state)
        loss = token_loss(logits, labels) if labels is not None else None
        return self._finish(MaskedLMOutput, return_dict, enc, loss=loss, logits=logits)


class BertForSequenceClassification(_Head):
    add_pooling_layer = True

    def __init__(self, config) -> None:
        super().__init__(config)
        self.classifier = layers.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    def classify(self, enc):
        pooled = self._dropout(enc.pooler_output)
        return self.classifier(pooled)

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None,
                inputs_embeds=None, labels=None, output_attentions=None, output_hidden_states=None,
                return_dict=None, **kwargs):
        enc = self._encode(input_ids, attention_mask, token_type_ids, position_ids, inputs_embeds,
                           output_attentions, output_hidden_states)
        logits = self.classify(enc)
        loss = sequence_classification_loss(self.config, logits, labels) if labels is not None else None
        return self._finish(SequenceClassifierOutput, return_dict, enc, loss=loss, logits=logits)


class BertForTokenClassification(_Head):
    _keys_to_ignore_on_load_unexpected = (r"pooler",)

    def __init__(self, config) -> None:
        super().__init__(config)
        self.classifier = layers.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None,
                inputs_embeds=None, labels=None, output_attentions=None, output_hidden_states=None,
                return_dict=None, **kwargs):
        enc = self._encode(input_ids, attention_mask, token_type_ids, position_ids, inputs_embeds,
                           output_attentions, output_hidden_states)
        x = self._dropout(enc.last_hidden_state)
        logits = self.classifier(x)
        loss = token_loss(logits, labels) if labels is not None else None
        return self._finish(TokenClassifierOutput, return_dict, enc, loss=loss, logits=logits)


class BertForQuestionAnswering(_Head):
    _keys_to_ignore_on_load_unexpected = (r"pooler",)

    def __init__(self, config) -> None:
        super().__init__(config)
        self.qa_outputs = layers.Linear(config.hidden_size, config.num_labels)
        # span logits are a distribution over every position, padded ones included (as in transformers): the
        # encoder computes them (run_encoder)
        self.base_model.encoder.keep_padding = True
        self.post_init()

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None,
                inputs_embeds=None, start_positions=None, end_positions=None, output_attentions=None,
                output_hidden_states=None, return_dict=None, **kwargs):
        enc = self._encode(input_ids, attention_mask, token_type_ids, position_ids, inputs_embeds,
                           output_attentions, output_hidden_states)
        logits = self.qa_outputs(enc.last_hidden_state)
        start_logits, end_logits = (t.squeeze(-1).contiguous() for t in logits.split(1, dim=-1)[:2])
        loss = None
        if start_positions is not None and end_positions is not None:
            loss = span_loss(start_logits, end_logits, start_positions, end_positions)
        return self._finish(QuestionAnsweringModelOutput, return_dict, enc, loss=loss,
                            start_logits=start_logits, end_logits=end_logits)


class BertForMultipleChoice(_Head):
    add_pooling_layer = True

    def __init__(self, config) -> None:
        super().__init__(config)
        self.classifier = layers.Linear(config.hidden_size, 1)
        self.post_init()

    def classify(self, enc):
        return self.classifier(self._dropout(enc.pooler_output))

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None,
                inputs_embeds=None, labels=None, output_attentions=None, output_hidden_states=None,
                return_dict=None, **kwargs):
        source = input_ids if input_ids is not None else inputs_embeds
        if source is None:
            raise ValueError("pass input_ids or inputs_embeds of shape (batch, num_choices, seq_len)")
        num_choices = source.shape[1]

        def flat(t):
            return None if t is None else t.reshape(-1, *t.shape[2:])

        enc = self._encode(flat(input_ids), flat(attention_mask), flat(token_type_ids), flat(position_ids),
                           flat(inputs_embeds), output_attentions, output_hidden_states)
        logits = self.classify(enc).view(-1, num_choices)
        loss = nn.functional.cross_entropy(logits, labels) if labels is not None else None
        return self._finish(MultipleChoiceModelOutput, return_dict, enc, loss=loss, logits=logits)


MODEL_CLASSES = {
    "AutoModel": BertModel,
    "AutoModelForMaskedLM": BertForMaskedLM,
    "AutoModelForSequenceClassification": BertForSequenceClassification,
    "AutoModelForTokenClassification": BertForTokenClassification,
    "AutoModelForQuestionAnswering": BertForQuestionAnswering,
    "AutoModelForMultipleChoice": BertForMultipleChoice,
}
