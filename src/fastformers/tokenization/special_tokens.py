"""Special tokens: `bos_token`, `bos_token_id`, ... as attributes, `add_special_tokens`, and the post-processor
templates that put them around sequences (`add_bos_token` / `add_eos_token`, `build_inputs_with_special_tokens`,
`get_special_tokens_mask`), as transformers' tokenizers have them."""

from __future__ import annotations

import json
from typing import Optional

from tokenizers import AddedToken, processors

SPECIAL_TOKENS_ATTRIBUTES = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")


def as_added_token(value, special: Optional[bool] = None):
    """str / AddedToken / {"content": ..., ...} (optionally with "__type") -> str or AddedToken."""
    if isinstance(value, dict) and "content" in value:
        fields = {k: v for k, v in value.items() if k != "__type"}
        if special is not None:
            fields["special"] = special
        return AddedToken(**fields)
    return value


def convert_typed_dicts(obj):
    """Turn {"__type": "AddedToken", ...} dicts (transformers' saved form) back into AddedToken objects."""
    if isinstance(obj, dict) and obj.get("__type") == "AddedToken":
        return as_added_token(obj)
    if isinstance(obj, (list, tuple)):
        return [convert_typed_dicts(o) for o in obj]
    if isinstance(obj, dict):
        return {k: convert_typed_dicts(v) for k, v in obj.items()}
    return obj


def added_token_state(token: AddedToken) -> dict:
    return {"content": token.content, "single_word": token.single_word, "lstrip": token.lstrip,
            "rstrip": token.rstrip, "normalized": token.normalized, "special": token.special}


class SpecialTokensMixin:
    """The special-token part of `PreTrainedTokenizerFast` (which provides `_special_tokens_map`,
    `_extra_special_tokens`, the `_tokenizer` backend and the id <-> token conversions these methods use)."""

    SPECIAL_TOKENS_ATTRIBUTES = list(SPECIAL_TOKENS_ATTRIBUTES)

    # ------------------------------------------------------------------------------------------------------------
    # Special tokens as attributes (bos_token, bos_token_id, ...), like transformers
    # ------------------------------------------------------------------------------------------------------------
    def __getattr__(self, key: str):
        if key.startswith("__"):
            raise AttributeError(key)
        base = key[:-4] if key.endswith("_ids") else key[:-3] if key.endswith("_id") else key
        special_map = self.__dict__.get("_special_tokens_map")
        if special_map is not None and base in special_map:
            value = special_map.get(base)
            if value is None:
                return None
            return self.convert_tokens_to_ids(str(value)) if key != base else str(value)
        if base in ("extra_special_tokens", "additional_special_tokens"):
            tokens = [str(t) for t in self.__dict__.get("_extra_special_tokens", [])]
            return self.convert_tokens_to_ids(tokens) if key != base else tokens
        raise AttributeError(f"{type(self).__name__} has no attribute {key}")

    def __setattr__(self, key: str, value):
        base = key[:-4] if key.endswith("_ids") else key[:-3] if key.endswith("_id") else key
        special_map = self.__dict__.get("_special_tokens_map")
        if special_map is not None and (base in SPECIAL_TOKENS_ATTRIBUTES or base in special_map):
            if key != base and value is not None:
                value = self.convert_ids_to_tokens(value)
            if value is not None and not isinstance(value, (str, AddedToken)):
                raise ValueError(f"Cannot set a non-string value as the {base}")
            special_map[base] = value
            return
        if base in ("extra_special_tokens", "additional_special_tokens") and special_map is not None:
            if key != base and isinstance(value, (list, tuple)):
                value = [self.convert_ids_to_tokens(v) for v in value]
            if value is not None and not isinstance(value, (list, tuple)):
                raise ValueError(f"extra_special_tokens must be a list or tuple, got {type(value)}")
            object.__setattr__(self, "_extra_special_tokens", [] if value is None else list(value))
            return
        object.__setattr__(self, key, value)

    @property
    def special_tokens_map(self) -> dict[str, str]:
        """Named special tokens (bos_token, eos_token, ...) that are set, as strings."""
        return {k: str(self._special_tokens_map[k]) for k in self.SPECIAL_TOKENS_ATTRIBUTES
                if self._special_tokens_map.get(k) is not None}

    @property
    def all_special_tokens(self) -> list[str]:
        seen, out = set(), []
        for value in [self._special_tokens_map.get(k) for k in self.SPECIAL_TOKENS_ATTRIBUTES] + list(
                self._extra_special_tokens):
            if value is not None and str(value) not in seen:
                seen.add(str(value))
                out.append(str(value))
        return out

    @property
    def all_special_ids(self) -> list[int]:
        return self.convert_tokens_to_ids(self.all_special_tokens)

    @property
    def pad_token_type_id(self) -> int:
        return self._pad_token_type_id

    def add_special_tokens(self, special_tokens_dict: dict, replace_extra_special_tokens: bool = True) -> int:
        """Set named special tokens ({"pad_token": "[PAD]", "additional_special_tokens": [...]}) and add them to
        the vocabulary when missing; returns how many tokens were added."""
        if not special_tokens_dict:
            return 0
        special_tokens_dict = dict(special_tokens_dict)
        if "additional_special_tokens" in special_tokens_dict and not special_tokens_dict.get(
                "extra_special_tokens"):
            special_tokens_dict["extra_special_tokens"] = special_tokens_dict.pop("additional_special_tokens")
        allowed = set(self.SPECIAL_TOKENS_ATTRIBUTES) | {"extra_special_tokens"}
        to_add = []
        for key, value in special_tokens_dict.items():
            if key not in allowed:
                raise ValueError(f"Key {key} is not a valid special token. Valid keys are: {sorted(allowed)}")
            if key == "extra_special_tokens":
                if not isinstance(value, (list, tuple)) or not all(isinstance(t, (str, AddedToken)) for t in value):
                    raise ValueError(f"Tokens {value} for key {key} should all be str or AddedToken instances")
                current = [str(t) for t in self._extra_special_tokens]
                new = [AddedToken(t, rstrip=False, lstrip=False, normalized=False, special=True)
                       if isinstance(t, str) else t
                       for t in value if replace_extra_special_tokens or str(t) not in current]
                if replace_extra_special_tokens and new:
                    self._extra_special_tokens = list(new)
                else:
                    self._extra_special_tokens.extend(new)
                to_add.extend(new)
            else:
                if not isinstance(value, (str, AddedToken)):
                    raise ValueError(f"Token {value} for key {key} should be a str or an AddedToken instance")
                if isinstance(value, str):
                    value = AddedToken(value, rstrip=False, lstrip=False, normalized=False, special=True)
                self._special_tokens_map[key] = value
                to_add.append(value)
        return self.add_tokens(to_add, special_tokens=True)

    # ------------------------------------------------------------------------------------------------------------
    # Post-processor (bos/eos templates) and special-token templates on ids
    # ------------------------------------------------------------------------------------------------------------
    @property
    def add_bos_token(self) -> bool:
        return self.__dict__.get("_add_bos_token", False)

    @add_bos_token.setter
    def add_bos_token(self, value: bool):
        object.__setattr__(self, "_add_bos_token", bool(value))
        self.update_post_processor()

    @property
    def add_eos_token(self) -> bool:
        return self.__dict__.get("_add_eos_token", False)

    @add_eos_token.setter
    def add_eos_token(self, value: bool):
        object.__setattr__(self, "_add_eos_token", bool(value))
        self.update_post_processor()

    def update_post_processor(self) -> None:
        """Set a template post-processor adding bos/eos according to add_bos_token / add_eos_token."""
        bos, eos = self.bos_token, self.eos_token
        if bos is None and self._add_bos_token:
            object.__setattr__(self, "_add_bos_token", False)
        if eos is None and self._add_eos_token:
            object.__setattr__(self, "_add_eos_token", False)
        add_bos, add_eos = self._add_bos_token, self._add_eos_token
        single = f"{(bos + ':0 ') if add_bos else ''}$A:0{(' ' + eos + ':0') if add_eos else ''}"
        pair = f"{single}{(' ' + bos + ':1') if add_bos else ''} $B:1{(' ' + eos + ':1') if add_eos else ''}"
        special = []
        if add_bos:
            special.append((bos, self.bos_token_id))
        if add_eos:
            special.append((eos, self.eos_token_id))
        self._tokenizer.post_processor = processors.TemplateProcessing(single=single, pair=pair,
                                                                       special_tokens=special)

    def _templates(self):
        """(single, pair) templates of the post-processor as lists of ("seq", 0|1, type_id) / ("tok", [ids],
        type_id); None when the post-processor is one we cannot read."""
        pp = self._tokenizer.post_processor
        if pp is None:
            return [("seq", 0, 0)], [("seq", 0, 0), ("seq", 1, 1)]
        state = json.loads(self._tokenizer.to_str()).get("post_processor")
        return _read_templates(state)

    def _apply_template(self, token_ids_0, token_ids_1=None):
        templates = self._templates()
        if templates is None:
            raise ValueError(
                f"cannot apply post-processor {type(self._tokenizer.post_processor).__name__} to ids")
        template = templates[0] if token_ids_1 is None else templates[1]
        ids, types, special = [], [], []
        seqs = [list(token_ids_0), list(token_ids_1 or [])]
        for kind, value, type_id in template:
            piece = seqs[value] if kind == "seq" else list(value)
            ids += piece
            types += [type_id] * len(piece)
            special += [0 if kind == "seq" else 1] * len(piece)
        return ids, types, special

    def build_inputs_with_special_tokens(self, token_ids_0: list[int], token_ids_1: Optional[list[int]] = None):
        """Add the special tokens of the post-processor ([CLS] A [SEP] B [SEP], <s> A </s></s> B </s>, ...)."""
        return self._apply_template(token_ids_0, token_ids_1)[0]

    def create_token_type_ids_from_sequences(self, token_ids_0: list[int], token_ids_1: Optional[list[int]] = None):
        return self._apply_template(token_ids_0, token_ids_1)[1]

    def get_special_tokens_mask(self, token_ids_0: list[int], token_ids_1: Optional[list[int]] = None,
                                already_has_special_tokens: bool = False) -> list[int]:
        if already_has_special_tokens:
            if token_ids_1 is not None:
                raise ValueError("You should not supply a second sequence if the provided sequence of ids is already "
                                 "formatted with special tokens for the model.")
            special_ids = set(self.all_special_ids)
            return [1 if int(t) in special_ids else 0 for t in token_ids_0]
        return self._apply_template(token_ids_0, token_ids_1)[2]


def _read_templates(state):
    """Post-processor JSON -> (single, pair) templates for _apply_template, or None if not understood."""
    if state is None:
        return [("seq", 0, 0)], [("seq", 0, 0), ("seq", 1, 1)]
    kind = state.get("type")
    if kind == "TemplateProcessing":
        specials = {k: v["ids"] for k, v in state.get("special_tokens", {}).items()}

        def convert(items):
            out = []
            for item in items:
                if "Sequence" in item:
                    out.append(("seq", 0 if item["Sequence"]["id"] == "A" else 1, item["Sequence"]["type_id"]))
                else:
                    out.append(("tok", specials[item["SpecialToken"]["id"]], item["SpecialToken"]["type_id"]))
            return out

        return convert(state["single"]), convert(state["pair"])
    if kind == "BertProcessing":
        cls_id, sep_id = state["cls"][1], state["sep"][1]
        return ([("tok", [cls_id], 0), ("seq", 0, 0), ("tok", [sep_id], 0)],
                [("tok", [cls_id], 0), ("seq", 0, 0), ("tok", [sep_id], 0), ("seq", 1, 1), ("tok", [sep_id], 1)])
    if kind == "RobertaProcessing":
        cls_id, sep_id = state["cls"][1], state["sep"][1]
        return ([("tok", [cls_id], 0), ("seq", 0, 0), ("tok", [sep_id], 0)],
                [("tok", [cls_id], 0), ("seq", 0, 0), ("tok", [sep_id, sep_id], 0), ("seq", 1, 0),
                 ("tok", [sep_id], 0)])
    if kind == "ByteLevel":
        return [("seq", 0, 0)], [("seq", 0, 0), ("seq", 1, 1)]
    if kind == "Sequence":
        found = None
        for sub in state.get("processors", []):
            if sub.get("type") == "ByteLevel":
                continue
            if found is not None:
                return None
            found = _read_templates(sub)
        return found if found is not None else _read_templates(None)
    return None
