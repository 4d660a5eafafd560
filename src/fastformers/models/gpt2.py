"""GPT-2: learned positions, pre-LayerNorm blocks, fused c_attn projection, tied LM head.

Checkpoint weights of GPT-2's Conv1D layers are stored (in_features, out_features); they are used as
they are (layers.Conv1D: the op takes the transposed view, no copy), so names and layouts round-trip unchanged.
"""

from __future__ import annotations

import torch
from torch import nn

from .. import layers
from ..configuration import PretrainedConfig
from ..generation.cache import DynamicCache, cache_step
from ..generation.utils import GenerationMixin
from ..modeling import PreTrainedModel
from ..outputs import SequenceClassifierOutput, _output
from ..layers import Conv1D
from ._common import call_layer, check_inputs, sequence_classification_loss
from .llama import CausalLMOutputWithPast, causal_lm_loss

BaseModelOutputWithPastAndCrossAttentions = _output(
    "BaseModelOutputWithPastAndCrossAttentions",
    "last_hidden_state", "past_key_values", "hidden_states", "attentions", "cross_attentions")


class GPT2Config(PretrainedConfig):
    model_type = "gpt2"
    attribute_map = {"hidden_size": "n_embd", "max_position_embeddings": "n_positions",
                     "num_attention_heads": "n_head", "num_hidden_layers": "n_layer"}
    defaults = dict(
        vocab_size=50257, n_positions=1024, n_embd=768, n_layer=12, n_head=12, n_inner=None,
        activation_function="gelu_new", resid_pdrop=0.1, embd_pdrop=0.1, attn_pdrop=0.1, layer_norm_epsilon=1e-5,
        initializer_range=0.02, summary_type="cls_index", summary_use_proj=True, summary_activation=None,
        summary_proj_to_labels=True, summary_first_dropout=0.1, scale_attn_weights=True, use_cache=True,
        bos_token_id=50256, eos_token_id=50256, scale_attn_by_inverse_layer_idx=False,
        reorder_and_upcast_attn=False, tie_word_embeddings=True,
    )


class GPT2Attention(nn.Module):
    def __init__(self, config, layer_idx: int) -> None:
        super().__init__()
        self.layer_idx = layer_idx
        self.num_heads = config.n_head
        self.head_dim = config.n_embd // config.n_head
        if self.head_dim * self.num_heads != config.n_embd:
            raise ValueError(f"n_embd={config.n_embd} is not a multiple of n_head={config.n_head}")
        self.scale = self.head_dim ** -0.5 if config.scale_attn_weights else 1.0
        if config.scale_attn_by_inverse_layer_idx:
            self.scale /= float(layer_idx + 1)
        self.c_attn = Conv1D(3 * config.n_embd, config.n_embd)
        self.c_proj = Conv1D(config.n_embd, config.n_embd)
        self.dropout_p = config.attn_pdrop
        self.attn = layers.Attention(causal=True, scale=self.scale, dropout_p=self.dropout_p)

    def forward(self, x, cache, cache_position, key_mask, output_attentions: bool):
        batch, seq, width = x.shape
        q, k, v = (t.view(batch, seq, self.num_heads, self.head_dim).transpose(1, 2)
                   for t in self.c_attn(x).split(width, dim=2))
        if cache is not None:
            k, v = cache.update(self.layer_idx, k, v, cache_position)
        out, probs = self.attn(q, k, v, key_mask, return_probs=output_attentions)
        return self.c_proj(out.transpose(1, 2).reshape(batch, seq, width)), probs


class GPT2MLP(nn.Module):
    def __init__(self, config) -> None:
        super().__init__()
        inner = config.n_inner or 4 * config.n_embd
        self.c_fc = Conv1D(inner, config.n_embd)
        self.c_proj = Conv1D(config.n_embd, inner)
        self.act = layers.Activation(config.activation_function)

    def forward(self, x):
        return self.c_proj(self.act(self.c_fc(x), None))


class GPT2Block(nn.Module):
    def __init__(self, config, layer_idx: int) -> None:
        super().__init__()
        self.ln_1 = layers.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon)
        self.attn = GPT2Attention(config, layer_idx)
        self.ln_2 = layers.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon)
        self.mlp = GPT2MLP(config)
        self.dropout_p = config.resid_pdrop

    def _drop(self, x):
        return nn.functional.dropout(x, self.dropout_p, training=True) if self.training and self.dropout_p else x

    def forward(self, x, cache, cache_position, key_mask, output_attentions: bool):
        h, probs = self.attn(self.ln_1(x), cache, cache_position, key_mask, output_attentions)
        x = self._drop(h) + x
        return self._drop(self.mlp(self.ln_2(x))) + x, probs


class GPT2PreTrainedModel(PreTrainedModel):
    config_class = GPT2Config
    base_model_prefix = "transformer"
    _keys_to_ignore_on_load_unexpected = (r"attn\.masked_bias", r"attn\.bias$")

    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        if isinstance(module, Conv1D):
            nn.init.normal_(module.weight, std=self.config.initializer_range)
            nn.init.zeros_(module.bias)


class GPT2Model(GPT2PreTrainedModel):
    def __init__(self, config) -> None:
        super().__init__(config)
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)
        self.wpe = nn.Embedding(config.n_positions, config.n_embd)
        self.h = nn.ModuleList(GPT2Block(config, i) for i in range(config.n_layer))
        self.ln_f = layers.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon)
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.wte

    def forward(self, input_ids=None, attention_mask=None, position_ids=None, past_key_values=None,
                inputs_embeds=None, token_type_ids=None, use_cache=None, output_attentions=None,
                output_hidden_states=None, return_dict=None, cache_position=None, **kwargs):
        cfg = self.config
        cache = past_key_values
        batch, seq = check_inputs(input_ids, inputs_embeds, cfg.vocab_size, None)
        use_cache = (cfg.use_cache and not self.training) if use_cache is None else use_cache
        if cache is None and use_cache:
            cache = DynamicCache()
        output_attentions = cfg.output_attentions if output_attentions is None else output_attentions
        output_hidden_states = cfg.output_hidden_states if output_hidden_states is None else output_hidden_states

        x = self.wte(input_ids) if inputs_embeds is None else inputs_embeds
        step = cache_step(cache, batch, seq, x.device, cache_position, attention_mask, max_positions=cfg.n_positions)
        cache_position, key_mask = step.cache_position, step.key_mask
        if position_ids is None:
            position_ids = cache_position[None]
        x = x + self.wpe(position_ids)
        if token_type_ids is not None:
            x = x + self.wte(token_type_ids)
        if self.training and cfg.embd_pdrop:
            x = nn.functional.dropout(x, cfg.embd_pdrop, training=True)

        hidden_states = () if output_hidden_states else None
        attentions = () if output_attentions else None
        for block in self.h:
            if output_hidden_states:
                hidden_states += (x,)
            x, probs = call_layer(block, x, cache, cache_position, key_mask, output_attentions)
            if output_attentions:
                attentions += (probs,)
        x = self.ln_f(x)
        if output_hidden_states:
            hidden_states += (x,)
        out = BaseModelOutputWithPastAndCrossAttentions(
            last_hidden_state=x, past_key_values=cache if use_cache else None, hidden_states=hidden_states,
            attentions=attentions)
        return out if (cfg.return_dict if return_dict is None else return_dict) else out.to_tuple()


class GPT2LMHeadModel(GPT2PreTrainedModel, GenerationMixin):
    _tied_weights_keys = {"lm_head.weight": "transformer.wte.weight"}

    def __init__(self, config) -> None:
        super().__init__(config)
        self.transformer = GPT2Model(config)
        self.lm_head = layers.Linear(config.n_embd, config.vocab_size, bias=False)
        self.post_init()

    def get_output_embeddings(self) -> nn.Module:
        return self.lm_head

    def forward(self, input_ids=None, attention_mask=None, position_ids=None, past_key_values=None,
                inputs_embeds=None, token_type_ids=None, labels=None, use_cache=None, output_attentions=None,
                output_hidden_states=None, return_dict=None, cache_position=None, logits_to_keep: int = 0, **kwargs):
        out = self.transformer(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                               past_key_values=past_key_values, inputs_embeds=inputs_embeds,
                               token_type_ids=token_type_ids, use_cache=use_cache, output_attentions=output_attentions,
                               output_hidden_states=output_hidden_states, return_dict=True,
                               cache_position=cache_position)
        h = out.last_hidden_state
        if logits_to_keep:
            h = h[:, -logits_to_keep:]
        logits = self.lm_head(h)
        loss = causal_lm_loss(logits, labels) if labels is not None else None
        result = CausalLMOutputWithPast(loss=loss, logits=logits, past_key_values=out.get("past_key_values"),
                                        hidden_states=out.get("hidden_states"), attentions=out.get("attentions"))
        return result if (self.config.return_dict if return_dict is None else return_dict) else result.to_tuple()


class GPT2ForSequenceClassification(GPT2PreTrainedModel):
    """Classifies from the last non-padding token (the rightmost token that is not pad_token_id)."""

    _keys_to_ignore_on_load_unexpected = GPT2PreTrainedModel._keys_to_ignore_on_load_unexpected + (r"lm_head",)

    def __init__(self, config) -> None:
        super().__init__(config)
        self.transformer = GPT2Model(config)
        self.score = layers.Linear(config.n_embd, config.num_labels, bias=False)
        self.post_init()

    def forward(self, input_ids=None, attention_mask=None, position_ids=None, past_key_values=None,
                inputs_embeds=None, token_type_ids=None, labels=None, use_cache=None, output_attentions=None,
                output_hidden_states=None, return_dict=None, **kwargs):
        out = self.transformer(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                               past_key_values=past_key_values, inputs_embeds=inputs_embeds,
                               token_type_ids=token_type_ids, use_cache=use_cache, output_attentions=output_attentions,
                               output_hidden_states=output_hidden_states, return_dict=True)
        logits = self.score(out.last_hidden_state)
        batch = logits.shape[0]
        pad = self.config.pad_token_id
        if pad is None and batch != 1:
            raise ValueError("GPT2ForSequenceClassification needs config.pad_token_id to classify batches of more "
                             "than one sequence")
        if pad is None or input_ids is None:
            last = torch.full((batch,), logits.shape[1] - 1, device=logits.device)
        else:
            positions = torch.arange(input_ids.shape[-1], device=logits.device, dtype=torch.int32)
            last = (positions * (input_ids != pad).to(torch.int32)).argmax(-1)
        pooled = logits[torch.arange(batch, device=logits.device), last]
        loss = sequence_classification_loss(self.config, pooled, labels) if labels is not None else None
        result = SequenceClassifierOutput(loss=loss, logits=pooled, hidden_states=out.get("hidden_states"),
                                          attentions=out.get("attentions"))
        return result if (self.config.return_dict if return_dict is None else return_dict) else result.to_tuple()


MODEL_CLASSES = {
    "AutoModel": GPT2Model,
    "AutoModelForCausalLM": GPT2LMHeadModel,
    "AutoModelForSequenceClassification": GPT2ForSequenceClassification,
}
