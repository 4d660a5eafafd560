"""The base model class: from_pretrained / save_pretrained, dtype and device, weight loading.

Loading builds the module tree on the meta device (no memory, no random init), then streams each
checkpoint tensor, cast to the target dtype and device, into its place. Only weights the checkpoint
lacks are allocated and initialised, and they are reported by name, as transformers does.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import os
import re
from typing import Any, Dict, Iterable, List, Optional, Tuple

import torch
from torch import nn

from .configuration import CONFIG_NAME, PretrainedConfig, check_against_memory, check_against_weights, check_config_sizes
from .generation.cache import rename_cache_argument
from .layers.linear import Linear, weights_changed
from .loading.gguf import read_gguf
from .loading.hub import refuse_remote_code, resolve_file
from .loading.progress import LoadProgress
from .loading.weights import (SAFE_WEIGHTS_INDEX_NAME, SAFE_WEIGHTS_NAME, checkpoint_dtype, find_weight_files,
                              parameter_capacity, read_tensors)
from .ops.linear import attach_quantized_twin

logger = logging.getLogger("fastformers")

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16, "float64": torch.float64,
           "fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16, "half": torch.float16,
           "float": torch.float32}
# Checkpoint names older releases used (TF-era BERT): renamed on load.
_LEGACY_RENAMES = ((re.compile(r"LayerNorm\.gamma$"), "LayerNorm.weight"), (re.compile(r"LayerNorm\.beta$"), "LayerNorm.bias"))
# Buffers that older checkpoints store and that fastformers computes instead.
_ALWAYS_IGNORED = (re.compile(r"(^|\.)position_ids$"),)


def to_torch_dtype(value: Any, argument: str = "torch_dtype") -> Optional[torch.dtype]:
    if value is None or isinstance(value, torch.dtype):
        return value
    if isinstance(value, str) and value.removeprefix("torch.") in _DTYPES:
        return _DTYPES[value.removeprefix("torch.")]
    raise ValueError(f"{argument}={value!r} is not a dtype; use 'auto', a torch.dtype or one of {sorted(_DTYPES)}")


def parse_size(size: int | str) -> int:
    if isinstance(size, int):
        return size
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?I?B)\s*", size.upper())
    if not m:
        raise ValueError(f"max_shard_size={size!r} is not a size like '5GB' or '200MB'")
    unit = m.group(2)
    base = 1024 if "I" in unit else 1000
    return int(float(m.group(1)) * base ** "BKMGT".index(unit[0]))


class PreTrainedModel(nn.Module):
    config_class: type = PretrainedConfig
    base_model_prefix: str = ""
    # Tied parameters: target name -> source name, full names within this class.
    _tied_weights_keys: Dict[str, str] = {}
    # Regexes of checkpoint keys this class does not use and need not warn about.
    _keys_to_ignore_on_load_unexpected: Tuple[str, ...] = ()
    # Store nn.Linear weights K-major on the CPU (same values and names, transposed storage): MKL's
    # GEMV streams that layout ~25% faster, which is what single-sequence decoding spends its time on.
    _k_major_linears_on_cpu: bool = False
    # What transformers' Trainer and peft read off a model.
    main_input_name: str = "input_ids"
    supports_gradient_checkpointing: bool = True
    _keys_to_ignore_on_save: Optional[List[str]] = None

    def __init__(self, config: PretrainedConfig) -> None:
        super().__init__()
        if not isinstance(config, PretrainedConfig):
            raise TypeError(f"{type(self).__name__} needs a config object, got {type(config).__name__}")
        self.config = config
        check_config_sizes(config)  # a clear error naming the key before a layer is built
        if torch.empty(()).device.type != "meta":  # from_pretrained builds on meta: checked against the files
            check_against_memory(config, torch.get_default_dtype().itemsize)

    # -- properties transformers users reach for ---------------------------------------------
    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(p.dtype for p in self.parameters() if p.is_floating_point())

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if "cache" in kwargs:  # transformers 5.25's name for past_key_values
            rename_cache_argument(kwargs)
        return super().__call__(*args, **kwargs)

    @property
    def base_model(self) -> nn.Module:
        return getattr(self, self.base_model_prefix, self)

    def num_parameters(self, only_trainable: bool = False, exclude_embeddings: bool = False) -> int:
        """Parameters counted once each (tied ones once); `exclude_embeddings`: without those of nn.Embedding
        modules (what Trainer's FLOP estimate counts)."""
        embedding = {id(p) for m in self.modules() if isinstance(m, nn.Embedding) for p in m.parameters()}
        seen = {id(p): p for p in self.parameters() if (p.requires_grad or not only_trainable)
                and not (exclude_embeddings and id(p) in embedding)}
        return sum(p.numel() for p in seen.values())

    def get_input_embeddings(self) -> nn.Module:
        base = self.base_model
        if base is self:
            raise AttributeError(f"{type(self).__name__} does not define get_input_embeddings")
        return base.get_input_embeddings()

    def get_output_embeddings(self) -> Optional[nn.Module]:
        return None

    def _replace_module(self, old: nn.Module, new: nn.Module) -> None:
        """Put `new` wherever `old` sits in the module tree, then tie again (tied copies follow the new weight)."""
        for module in self.modules():
            for name, child in list(module._modules.items()):
                if child is old:
                    module._modules[name] = new
        self.tie_weights()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self._replace_module(self.get_input_embeddings(), value)

    def set_output_embeddings(self, value: nn.Module) -> None:
        old = self.get_output_embeddings()
        if old is None:
            raise AttributeError(f"{type(self).__name__} has no output embeddings")
        self._replace_module(old, value)

    def resize_token_embeddings(self, new_num_tokens: Optional[int] = None, pad_to_multiple_of: Optional[int] = None,
                                mean_resizing: bool = True) -> nn.Embedding:
        """Grow or shrink the vocabulary to `new_num_tokens` (rounded up to `pad_to_multiple_of`); kept rows keep
        their values, new rows start at the mean of the old embeddings (`mean_resizing`; transformers samples
        near that mean) or at the model's initialisation. Tied output embeddings stay tied; an untied output
        layer and its bias are resized alike. Returns the input embedding."""
        old = self.get_input_embeddings()
        if new_num_tokens is None and pad_to_multiple_of is None:
            return old
        if type(old) is not nn.Embedding:
            raise NotImplementedError(f"resize_token_embeddings: the input embedding is a {type(old).__name__}, "
                                      f"not an nn.Embedding; resize it with set_input_embeddings")
        n = old.num_embeddings if new_num_tokens is None else new_num_tokens
        if pad_to_multiple_of is not None:
            if not isinstance(pad_to_multiple_of, int) or pad_to_multiple_of < 1:
                raise ValueError(f"pad_to_multiple_of={pad_to_multiple_of!r} must be a positive integer")
            n = -(-n // pad_to_multiple_of) * pad_to_multiple_of
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"new_num_tokens={new_num_tokens!r} must be a positive integer")
        output = self.get_output_embeddings()
        tied = output is not None and output.weight is old.weight
        weight = old.weight
        new = nn.Embedding(n, old.embedding_dim, padding_idx=old.padding_idx if (old.padding_idx or 0) < n else None,
                           device=weight.device, dtype=weight.dtype)
        new.weight.requires_grad_(weight.requires_grad)
        self._resize_rows(new.weight, weight, mean_resizing)
        self._replace_module(old, new)
        if output is not None and not tied:
            resized = Linear(output.in_features, n, bias=output.bias is not None, device=output.weight.device,
                                dtype=output.weight.dtype)
            self._resize_rows(resized.weight, output.weight, mean_resizing)
            if output.bias is not None:
                with torch.no_grad():
                    resized.bias.zero_()
                    resized.bias[:min(n, output.bias.shape[0])] = output.bias[:n]
            self._replace_module(output, resized)
        self._resize_output_bias(n)
        for module in self.modules():  # shapes the modules report follow their (possibly retied) weights
            if isinstance(module, nn.Embedding):
                module.num_embeddings = module.weight.shape[0]
            elif isinstance(module, nn.Linear) and isinstance(module.weight, torch.Tensor):
                module.out_features = module.weight.shape[0]
        self.config.vocab_size = n
        return self.get_input_embeddings()

    def _resize_rows(self, new: torch.Tensor, old: torch.Tensor, mean_resizing: bool) -> None:
        keep = min(new.shape[0], old.shape[0])
        with torch.no_grad():
            if mean_resizing:
                new.copy_(old.float().mean(0).to(new.dtype).expand_as(new))
            else:
                std = getattr(self.config, "initializer_range", 0.02)
                new.normal_(0.0, std)
            new[:keep] = old[:keep]

    def _resize_output_bias(self, n: int) -> None:
        """Vocabulary-sized biases outside the output linear: the sources it is tied to (BERT's
        cls.predictions.bias) and BART/Marian's final_logits_bias buffer."""
        for target, source in self._tie_pairs().items():
            if not target.endswith(".bias"):
                continue
            owner, _, name = source.rpartition(".")
            module, old = self.get_submodule(owner), self.get_parameter(source)
            if old.dim() != 1 or old.shape[0] == n:
                continue
            fresh = torch.zeros(n, dtype=old.dtype, device=old.device)
            fresh[:min(n, old.shape[0])] = old.detach()[:n]
            module._parameters[name] = nn.Parameter(fresh, requires_grad=old.requires_grad)
        buffer = getattr(self, "final_logits_bias", None)
        if isinstance(buffer, torch.Tensor) and buffer.shape[-1] != n:
            fresh = torch.zeros((1, n), dtype=buffer.dtype, device=buffer.device)
            fresh[:, :min(n, buffer.shape[-1])] = buffer[:, :n]
            self.final_logits_bias = fresh
        self.tie_weights()

    # -- training -------------------------------------------------------------------------------
    def train(self, mode: bool = True) -> "PreTrainedModel":
        """As nn.Module.train; entering training also gives every linear weight its own contiguous row-major
        storage again (undoing the CPU decode layout of k_major_linears_ and the views of fused projections),
        which is what state_dict consumers such as Trainer's checkpoint writer (safetensors) need. The
        Parameter objects stay the same, so an optimizer built before keeps working. (Trainer calls train()
        every step: the weights are checked on the switch from eval only.)"""
        if mode and not self.training:
            relaid = False
            with torch.no_grad():
                for module in self.modules():
                    if isinstance(module, nn.Linear):
                        for param in (module.weight, module.bias):
                            if isinstance(param, torch.Tensor) and (not param.is_contiguous()
                                                                    or param.untyped_storage().nbytes()
                                                                    != param.numel() * param.element_size()):
                                param.data = param.data.clone(memory_format=torch.contiguous_format)
                                relaid = True
            if relaid:
                weights_changed()  # fused projections were views of the old storage: fuse again at inference
        return super().train(mode)

    def _layers(self) -> List[nn.Module]:
        """The repeated blocks: items of the outermost nn.ModuleLists (a block's own lists are parts of it)."""
        found: List[nn.Module] = []

        def walk(module: nn.Module) -> None:
            for child in module.children():
                if isinstance(child, nn.ModuleList):
                    found.extend(child)
                else:
                    walk(child)

        walk(self)
        return found

    def activation_checkpointing_enable(self, activation_checkpointing_kwargs: Optional[Dict[str, Any]] = None,
                                        every_n_layers: int = 1, offload: bool = False) -> None:
        """Recompute each block's activations in the backward pass instead of keeping them (less memory, one more
        forward per block), while the model trains with autograd on. The keyword arguments go to
        torch.utils.checkpoint.checkpoint (use_reentrant=False unless given); `every_n_layers` checkpoints
        every n-th block only; `offload` keeps the saved block inputs in (pinned) CPU memory."""
        if not self.supports_gradient_checkpointing:
            raise ValueError(f"{type(self).__name__} does not support activation checkpointing")
        if not isinstance(every_n_layers, int) or every_n_layers < 1:
            raise ValueError(f"every_n_layers={every_n_layers!r} must be a positive integer")
        kwargs = dict(activation_checkpointing_kwargs or {})
        kwargs.setdefault("use_reentrant", False)
        checkpoint = functools.partial(_checkpoint, offload=offload, **kwargs)
        layers = self._layers()
        if not layers:
            raise ValueError(f"{type(self).__name__} has no repeated blocks to checkpoint")
        for i, layer in enumerate(layers):
            layer._gradient_checkpointing_func = checkpoint
            layer.gradient_checkpointing = i % every_n_layers == 0
        if self.main_input_name == "input_ids":
            # with frozen embeddings (peft), the checkpointed blocks' inputs must require grad for the
            # recomputation to produce gradients for the adapters
            self.enable_input_require_grads()

    def gradient_checkpointing_enable(self, gradient_checkpointing_kwargs: Optional[Dict[str, Any]] = None,
                                      **kwargs: Any) -> None:
        """The older name of activation_checkpointing_enable (transformers keeps both)."""
        self.activation_checkpointing_enable(gradient_checkpointing_kwargs, **kwargs)

    def activation_checkpointing_disable(self) -> None:
        for layer in self._layers():
            layer.gradient_checkpointing = False
        self.disable_input_require_grads()

    gradient_checkpointing_disable = activation_checkpointing_disable

    @property
    def is_activation_checkpointing(self) -> bool:
        return any(getattr(m, "gradient_checkpointing", False) for m in self.modules())

    is_gradient_checkpointing = is_activation_checkpointing

    def enable_input_require_grads(self) -> None:
        """Make the input embeddings' output require grad (for adapters and checkpointing over frozen embeddings)."""
        def hook(module, inputs, output):
            output.requires_grad_(True)

        self.disable_input_require_grads()
        self._require_grads_hook = self.get_input_embeddings().register_forward_hook(hook)

    def disable_input_require_grads(self) -> None:
        handle = self.__dict__.pop("_require_grads_hook", None)
        if handle is not None:
            handle.remove()

    def prepare_inputs_for_generation(self, input_ids: torch.Tensor, past_key_values: Any = None,
                                      attention_mask: Optional[torch.Tensor] = None,
                                      inputs_embeds: Optional[torch.Tensor] = None,
                                      cache_position: Optional[torch.Tensor] = None, **kwargs: Any) -> Dict[str, Any]:
        """The forward arguments for the next decoding step: the tokens the cache does not hold yet (peft's
        generate wraps this; fastformers' own generate builds its steps itself)."""
        past = past_key_values.get_seq_length() if past_key_values is not None else 0
        inputs: Dict[str, Any] = {"past_key_values": past_key_values, "attention_mask": attention_mask}
        if inputs_embeds is not None and past == 0:
            inputs["inputs_embeds"] = inputs_embeds
        else:
            inputs["input_ids"] = input_ids[:, past:] if past else input_ids
        if cache_position is not None:
            inputs["cache_position"] = cache_position
        inputs.update({k: v for k, v in kwargs.items() if v is not None})
        return inputs

    # -- initialisation and tying -------------------------------------------------------------
    def _init_weights(self, module: nn.Module) -> None:
        std = getattr(self.config, "initializer_range", 0.02)
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, std=std)
            if module.padding_idx is not None:
                with torch.no_grad():
                    module.weight[module.padding_idx].zero_()
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)

    def post_init(self) -> None:
        """Initialise every weight (skipped on the meta device) and tie what is tied."""
        if self.device.type != "meta":
            with torch.no_grad():
                self.apply(self._init_weights)
        self.tie_weights()

    def _tie_pairs(self) -> Dict[str, str]:
        if not getattr(self.config, "tie_word_embeddings", True):
            return {k: v for k, v in self._tied_weights_keys.items() if "embed" not in v}  # word embeddings
        return dict(self._tied_weights_keys)

    def state_dict(self, *args: Any, destination: Any = None, prefix: str = "", keep_vars: bool = False):
        """As nn.Module.state_dict (tied weights under each of their names, as in transformers), except that a tensor
        met again under a later name (a tied embedding) is a copy there. transformers' Trainer writes the bare state
        dict of models that are not its own classes with safetensors (checkpoints, save_model), and safetensors
        refuses tensors that share memory. With keep_vars=True the Parameters themselves, shared."""
        state = super().state_dict(*args, destination=destination, prefix=prefix, keep_vars=keep_vars)
        if not keep_vars:
            seen = set()
            for key, tensor in state.items():
                if key.startswith(prefix) and isinstance(tensor, torch.Tensor) and tensor.device.type != "meta":
                    ident = (tensor.data_ptr(), tensor.dtype, tuple(tensor.shape), tensor.stride())
                    if ident in seen:
                        state[key] = tensor.clone()
                    seen.add(ident)
        return state

    def tie_weights(self) -> None:
        for target, source in self._tie_pairs().items():
            owner, _, name = target.rpartition(".")
            self.get_submodule(owner)._parameters[name] = self.get_parameter(source)

    def k_major_linears_(self) -> "PreTrainedModel":
        """Re-lay nn.Linear weights as the transpose of a contiguous (in, out) matrix, in place.

        On CPU, a one-row matmul (a decode step) streams a K-major weight faster when it has at least
        as many outputs as inputs; a wide-input weight (a down projection) stays row-major, which
        measured faster for it (SmolLM2 shapes, 2 cores: 576x1536 18 vs 14 GB/s).
        """
        with torch.no_grad():
            for module in self.modules():
                if (isinstance(module, nn.Linear) and module.weight.stride(0) != 1
                        and module.out_features >= module.in_features):
                    module.weight.data = module.weight.data.t().contiguous().t()
        return self

    # -- loading ----------------------------------------------------------------------------
    @classmethod
    def from_config(cls, config: PretrainedConfig, *, torch_dtype=None, dtype=None) -> "PreTrainedModel":
        dtype = to_torch_dtype(dtype if dtype is not None else torch_dtype)
        model = cls(config)
        model.post_init()
        return model.to(dtype) if dtype is not None else model

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | os.PathLike,
        *,
        config: Optional[PretrainedConfig] = None,
        revision: Optional[str] = None,
        cache_dir: Optional[str | os.PathLike] = None,
        local_files_only: bool = False,
        token: Optional[str] = None,
        torch_dtype: Any = None,
        dtype: Any = None,
        device: Any = None,
        device_map: Any = None,
        trust_remote_code: bool = False,
        use_safetensors: Optional[bool] = None,
        gguf_file: Optional[str] = None,
        quantization_config: Any = None,
        load_in_8bit: bool = False,
        load_in_4bit: bool = False,
        **config_overrides: Any,
    ) -> "PreTrainedModel":
        """Load a checkpoint folder or hub repository (same arguments as transformers).

        `torch_dtype`/`dtype`: "auto" (default, as in transformers 5) keeps the checkpoint's dtype;
        `device` (or a single-device `device_map`) is where the weights are loaded; `gguf_file` names a
        GGUF file in the folder/repository to read config and weights from (dequantized).

        `quantization_config` (a `fastformers.QuantizationConfig` or its dict) quantizes the linears while
        they load, each weight as it is read; `load_in_8bit=True` / `load_in_4bit=True` are shortcuts (groups
        of 128). The request and the checkpoint's own quantization_config are resolved once into one
        quantization scheme (fastformers.quantization.registry), whose loader does the work. A checkpoint saved quantized (config.json `quantization_config` with quant_method
        "fastformers") loads packed as saved, and so do GPTQ and AutoAWQ checkpoints (quant_method "gptq" /
        "awq": repacked into fastformers' format as they load; save_pretrained then writes that format). With
        a GGUF file, `QuantizationConfig.from_gguf()` keeps its Q8_0 / Q4_0 / Q4_1 / Q4_K / Q6_K linear weights packed
        instead of dequantizing them: the default when `device` is a GPU (`quantization_config=False`
        dequantizes everything there too).
        """
        refuse_remote_code(trust_remote_code)
        hub = dict(revision=revision, cache_dir=cache_dir, local_files_only=local_files_only, token=token)
        config_overrides.pop("attn_implementation", None)  # one implementation: the op layer's
        if config is None:
            config = cls.config_class.from_pretrained(name_or_path, **hub, gguf_file=gguf_file, **config_overrides)
        else:
            for key, value in config_overrides.items():
                setattr(config, key, value)
        requested = dtype if dtype is not None else torch_dtype
        if requested is not None and requested != "auto":
            target_dtype = to_torch_dtype(requested, "dtype" if dtype is not None else "torch_dtype")
        else:
            target_dtype = to_torch_dtype(getattr(config, "dtype", None), "config dtype")
        device = _single_device(device if device is not None else device_map)
        gguf = read_gguf(resolve_file(name_or_path, gguf_file, **hub)) if gguf_file is not None else None
        quantization = _quantization_request(config, quantization_config, load_in_8bit, load_in_4bit,
                                             name_or_path, hub, gguf, device)

        files = None if gguf is not None else find_weight_files(name_or_path, use_safetensors=use_safetensors, **hub)
        check_config_sizes(config)
        check_against_weights(config, _weights_capacity(gguf, files), os.fspath(name_or_path))
        with torch.device("meta"):
            model = cls(config)
        # the quantization scheme's loader: its layers swapped in now, its tensors converted as they stream in
        quantizer = None if quantization is None else quantization.loader(
            model, gguf.hf_tensor_types() if gguf else None, model._key_mapper())
        if gguf is not None:
            target_dtype = target_dtype or torch.float32  # transformers dequantizes GGUF to float32
            stream = gguf.iter_state_dict(target_dtype, keep_quantized=quantizer.keep_gguf if quantizer else None)
            progress = LoadProgress([gguf.path], "gguf", total=sum(gguf.hf_name(n) is not None for n in gguf.tensors))
            stream = progress.wrap(stream, size=lambda piece: 1)
            # quantizing: one tensor at a time, so that a single float weight is alive at once
            shards = [(gguf.path, stream)] if quantizer else _chunked(gguf.path, stream)
        else:
            target_dtype = target_dtype or checkpoint_dtype(files[0]) or torch.float32
            progress = LoadProgress(files)
            tensors_of = lambda path: progress.wrap(read_tensors(path))  # noqa: E731
            shards = ((path, tensors_of(path) if quantizer else dict(tensors_of(path))) for path in files)
        with progress:  # a bar on a terminal for large files (loading.progress); cleared when the load ends
            model._load_checkpoint(shards, os.fspath(name_or_path), target_dtype, device, quantizer)
        if device.type == "cpu" and cls._k_major_linears_on_cpu:
            model.k_major_linears_()
        config.dtype = str(target_dtype).removeprefix("torch.")
        if quantizer is not None:
            config.quantization_config = quantizer.describe()
            if gguf is not None and getattr(quantizer.base, "source", None) == "gguf" and device.type == "cpu":
                _run_tied_head_packed(model, gguf, target_dtype, getattr(quantizer.base, "method", "weight_only"))
        config._name_or_path = os.fspath(name_or_path)
        if hasattr(model, "generate"):
            model.generation_config = _generation_config(name_or_path, config, gguf_file is not None, hub)
        return model.eval()

    def _checkpoint_key_map(self, keys: Iterable[str]) -> Dict[str, str]:
        """Map checkpoint key -> model key: legacy names, and the base-model prefix added or removed."""
        key_map = self._key_mapper()
        return {key: key_map(key) for key in keys}

    def _key_mapper(self, extra_names: Iterable[str] = ()):
        """The function checkpoint key -> model key of `_checkpoint_key_map`; `extra_names`: model keys the
        state_dict does not show (the float weight names of quantized linears)."""
        prefix = self.base_model_prefix
        own = set(self.state_dict(keep_vars=True)) | set(extra_names)
        has_base = prefix and any(k.startswith(prefix + ".") for k in own)

        def key_map(key: str) -> str:
            name = key
            for pattern, repl in _LEGACY_RENAMES:
                name = pattern.sub(repl, name)
            if name not in own and prefix:
                if has_base and prefix + "." + name in own:
                    name = prefix + "." + name
                elif not has_base and name.startswith(prefix + "."):
                    name = name[len(prefix) + 1:]
            return name

        return key_map

    def _load_checkpoint(self, shards: Iterable[Tuple[str, Any]], source: str, dtype: torch.dtype,
                         device: torch.device, quantizer: Any = None) -> None:
        """Fill the meta-device model from (file name, {checkpoint name: tensor} or an iterator of (name,
        tensor)) pieces, one at a time. `quantizer` (a quantization.loader.QuantizedLoader) turns the tensors of
        quantized linears into their packed buffers as they stream in."""
        own = self.state_dict(keep_vars=True)
        tied_targets = set(self._tie_pairs())
        loaded, unexpected, mismatched = set(), [], []
        key_map = self._key_mapper(quantizer.checkpoint_names if quantizer is not None else ())
        for path, tensors in shards:
            state = {}
            for key, tensor in (tensors.items() if isinstance(tensors, dict) else tensors):
                name = key_map(key)
                if quantizer is not None:
                    converted = quantizer.convert(key, name, tensor, dtype, device)
                    if converted is not None:
                        state.update(converted)
                        loaded.update(converted)
                        del tensor  # a float weight quantized: drop it before the next one is read
                        continue
                if name not in own:
                    if not any(p.search(key) for p in _ALWAYS_IGNORED):
                        unexpected.append(key)
                    continue
                if tuple(tensor.shape) != tuple(own[name].shape):
                    mismatched.append(f"{key}: checkpoint {tuple(tensor.shape)} vs model {tuple(own[name].shape)}")
                    continue
                cast = dtype if tensor.is_floating_point() else tensor.dtype
                state[name] = tensor.to(device=device, dtype=cast)
                loaded.add(name)
            if mismatched:
                raise ValueError(
                    f"{type(self).__name__}: shapes in {path} do not match the config of {source}: " + "; ".join(mismatched)
                )
            self.load_state_dict(state, strict=False, assign=True)
            del state, tensors
        # Reassignment broke shared parameters: tie them again, then fill what the checkpoint lacks.
        self.tie_weights()
        missing = [k for k in self.state_dict(keep_vars=True) if k not in loaded and k not in tied_targets]
        initialised = []
        if quantizer is not None:
            missing, initialised = quantizer.finish(missing, source, dtype, device,
                                                    getattr(self.config, "initializer_range", 0.02))
        # kept for callers that refuse random weights (the `fastformers pipeline` command)
        self.newly_initialized_weights = missing + initialised
        if missing or initialised:
            self._materialize(missing, dtype, device)
            logger.warning(
                "Some weights of %s were not initialized from the checkpoint at %s and are newly initialized: %s\n"
                "Train this model on a downstream task to use it for predictions and inference.",
                type(self).__name__, source, missing + initialised,
            )
        ignore = [re.compile(p) for p in self._keys_to_ignore_on_load_unexpected]
        unexpected = [k for k in unexpected if not any(p.search(k) for p in ignore)]
        if unexpected:
            logger.warning("Some weights of the checkpoint at %s were not used when initializing %s: %s",
                           source, type(self).__name__, unexpected)
        self.tie_weights()

    def _materialize(self, names: List[str], dtype: torch.dtype, device: torch.device) -> None:
        names = set(names)
        with torch.no_grad():
            for module_name, module in self.named_modules():
                created = False
                for pname, param in list(module.named_parameters(recurse=False)):
                    full = f"{module_name}.{pname}" if module_name else pname
                    if full in names:
                        module._parameters[pname] = nn.Parameter(
                            torch.empty(param.shape, dtype=dtype, device=device), requires_grad=param.requires_grad)
                        created = True
                if created:
                    self._init_weights(module)

    # -- saving -----------------------------------------------------------------------------
    def _record_quantization(self) -> None:
        """config.quantization_config describes the quantized linears this model has (quant_method "fastformers")."""
        from .quantization.plan import describe_for_saving

        described = describe_for_saving(self, getattr(self.config, "quantization_config", None))
        if described is not None:
            self.config.quantization_config = described

    def save_pretrained(self, save_directory: str | os.PathLike, *, state_dict: Optional[Dict[str, torch.Tensor]] = None,
                        max_shard_size: int | str = "5GB", safe_serialization: bool = True) -> None:
        """Write config.json and safetensors weights (sharded above max_shard_size) that transformers reads."""
        from safetensors.torch import save_file

        if not safe_serialization:
            raise ValueError("fastformers saves safetensors only (safe_serialization=False is not supported)")
        os.makedirs(save_directory, exist_ok=True)
        self._record_quantization()
        self.config.architectures = [type(self).__name__]
        self.config.dtype = str(self.dtype).removeprefix("torch.")
        self.config.save_pretrained(save_directory)

        # keep_vars: tied weights still share storage here, so each is written once (below)
        state = self.state_dict(keep_vars=True) if state_dict is None else state_dict
        tied_targets = set(self._tie_pairs())
        tensors: Dict[str, torch.Tensor] = {}
        seen = set()
        for name in sorted(state, key=lambda n: n in tied_targets):  # sources before tie targets
            tensor = state[name]
            ident = (tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tuple(tensor.shape))
            if ident in seen:
                continue
            seen.add(ident)
            tensor = tensor.detach().to("cpu").contiguous()
            if tensor.untyped_storage().nbytes() != tensor.numel() * tensor.element_size():
                tensor = tensor.clone()  # a view into a shared storage (e.g. fused q/k/v): safetensors wants its own
            tensors[name] = tensor

        limit = parse_size(max_shard_size)
        shards: List[Dict[str, torch.Tensor]] = [{}]
        size = 0
        for name, tensor in tensors.items():
            nbytes = tensor.numel() * tensor.element_size()
            if shards[-1] and size + nbytes > limit:
                shards.append({})
                size = 0
            shards[-1][name] = tensor
            size += nbytes
        for stale in (SAFE_WEIGHTS_NAME, SAFE_WEIGHTS_INDEX_NAME):
            if os.path.exists(os.path.join(save_directory, stale)):
                os.remove(os.path.join(save_directory, stale))
        if len(shards) == 1:
            save_file(shards[0], os.path.join(save_directory, SAFE_WEIGHTS_NAME), metadata={"format": "pt"})
            return
        weight_map = {}
        for i, shard in enumerate(shards, 1):
            filename = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
            save_file(shard, os.path.join(save_directory, filename), metadata={"format": "pt"})
            weight_map.update({name: filename for name in shard})
        index = {"metadata": {"total_size": sum(t.numel() * t.element_size() for t in tensors.values())},
                 "weight_map": weight_map}
        with open(os.path.join(save_directory, SAFE_WEIGHTS_INDEX_NAME), "w", encoding="utf-8") as f:
            json.dump(index, f, indent=2, sort_keys=True)


def _weights_capacity(gguf, files: Optional[List[str]]) -> int:
    """An upper bound on the parameters the weights hold (their headers; GGUF: the tensors' sizes)."""
    if gguf is None:
        return sum(parameter_capacity(f) for f in files)
    total = 0
    for info in gguf.tensors.values():
        n = 1
        for d in info.shape:
            n *= d
        total += n
    return total


def _checkpoint(function, *args, offload: bool = False, **kwargs):
    """torch.utils.checkpoint.checkpoint, with the saved inputs in CPU memory when `offload`."""
    from torch.utils.checkpoint import checkpoint

    if not offload:
        return checkpoint(function, *args, **kwargs)
    with torch.autograd.graph.save_on_cpu(pin_memory=torch.cuda.is_available()):
        return checkpoint(function, *args, **kwargs)


def _quantization_request(config, quantization_config, load_in_8bit: bool, load_in_4bit: bool, name_or_path,
                          hub: Dict[str, Any], gguf, device: torch.device):
    """The quantization.registry.QuantizationRequest (config object, packed) when the model loads quantized,
    else None: the caller's arguments and the checkpoint's own quantization_config (its config.json, which
    `config` was read from), resolved once (see from_pretrained)."""
    from .quantization.registry import resolve_request

    saved = None if gguf is not None else getattr(config, "quantization_config", None)
    return resolve_request(quantization_config, load_in_8bit, load_in_4bit, saved=saved,
                           saved_where=f"{os.fspath(name_or_path)}/{CONFIG_NAME}",
                           gguf_on_gpu=gguf is not None and _gguf_runs_packed(device))


def _gguf_runs_packed(device: torch.device) -> bool:
    """Where a GGUF file keeps its Q8_0 / Q4_0 / Q4_1 / Q4_K / Q6_K matrices packed unless told otherwise
    (quantization_config=False dequantizes, as transformers does): on a GPU (the Triton kernels), and on a CPU
    where fastformers._C is built (its kernels read them with float32 activations: the dequantized model's greedy
    tokens, several times its decode speed; bench/results/cpu)."""
    from .ops import native

    return device.type == "cuda" or (device.type == "cpu" and native.available())


def _run_tied_head_packed(model, gguf, dtype: torch.dtype, method: str = "weight_only") -> None:
    """A GGUF file kept packed (QuantizationConfig.from_gguf()) whose output head is tied to the embeddings: the
    embedding lookup keeps the dequantized float weight, and the head's matmul runs from the file's packed bytes
    (ops.linear's quantized twin; the same values, a quarter of the bytes read per token for a Q8_0 table), with
    the config's method (blockwise_a8: int8 activations, as the other linears)."""
    head, embed = model.get_output_embeddings(), model.get_input_embeddings()
    if head is None or embed is None or getattr(head, "weight", None) is not getattr(embed, "weight", None):
        return
    name = next((n for n, p in model.named_parameters() if p is embed.weight), None)
    key_map = model._key_mapper()
    qw = None if name is None else gguf.packed_tensor(lambda hf: key_map(hf) == name, dtype)
    if qw is not None and method != qw.method:
        qw = dataclasses.replace(qw, method=method)
    if qw is not None and attach_quantized_twin(embed.weight, qw):
        logger.info("%s: the tied output head runs from the file's packed %d-bit table", gguf.path, qw.bits)


def _generation_config(name_or_path, config, from_gguf: bool, hub: Dict[str, Any]):
    """generation_config.json when the checkpoint has one, else what the model config implies."""
    from .generation.configuration import GenerationConfig

    if not from_gguf:
        try:
            return GenerationConfig.from_pretrained(name_or_path, **hub)
        except OSError:
            pass
    return GenerationConfig.from_model_config(config)


def _chunked(label: str, items: Iterable[Tuple[str, torch.Tensor]], size: int = 32):
    """Group a stream of (name, tensor) into (label, dict) pieces: bounded memory, few load calls."""
    chunk: Dict[str, torch.Tensor] = {}
    for name, tensor in items:
        chunk[name] = tensor
        if len(chunk) == size:
            yield label, chunk
            chunk = {}
    if chunk:
        yield label, chunk


def _single_device(device: Any) -> torch.device:
    if device is None:
        return torch.device("cpu")
    if isinstance(device, dict):
        targets = set(device.values())
        if len(targets) != 1:
            raise ValueError(f"device_map={device!r}: fastformers places a model on one device")
        device = targets.pop()
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if isinstance(device, int):
        return torch.device("cuda", device)
    try:
        return torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"device={device!r} is not a device") from None
