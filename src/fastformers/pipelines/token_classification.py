"""token-classification (alias ner): a label per token, or per entity with an aggregation strategy.

Follows transformers' TokenClassificationPipeline: softmax per token; with "simple" adjacent tokens
of the same tag (B-/I- prefixes) are grouped; "first"/"average"/"max" first fuse the sub-word tokens
of each word into one prediction, then group. Scores are numpy float32, as transformers returns them.
"""

from __future__ import annotations

import warnings
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from .base import Pipeline

STRATEGIES = ("none", "simple", "first", "average", "max")


def _tag(label: str) -> Tuple[str, str]:
    """('B' or 'I', entity type): 'B-PER' -> ('B', 'PER'); a label without a prefix counts as inside."""
    if label.startswith(("B-", "I-")):
        return label[0], label[2:]
    return "I", label


class TokenClassificationPipeline(Pipeline):
    task = "token-classification"
    per_token_outputs = ("logits",)

    def sanitize_parameters(self, aggregation_strategy: Any = None, ignore_labels: Optional[Sequence[str]] = None,
                            stride: Optional[int] = None, is_split_into_words: bool = False):
        strategy = str(getattr(aggregation_strategy, "value", aggregation_strategy or "none")).lower()
        if strategy not in STRATEGIES:
            raise ValueError(f"aggregation_strategy={aggregation_strategy!r}: expected one of {', '.join(STRATEGIES)}")
        if stride is not None or is_split_into_words:
            raise NotImplementedError("token-classification: stride and is_split_into_words are not supported yet")
        return {}, {"aggregation_strategy": strategy,
                    "ignore_labels": ["O"] if ignore_labels is None else list(ignore_labels)}

    def preprocess(self, inputs: Any, **kwargs: Any) -> Dict[str, Any]:
        if not isinstance(inputs, str):
            raise ValueError(f"token-classification takes untokenized strings, got {type(inputs).__name__}")
        max_length = getattr(self.tokenizer, "model_max_length", None)
        encoded = dict(self.tokenizer(inputs, truncation=bool(max_length and max_length > 0),
                                      return_special_tokens_mask=True, return_offsets_mapping=True))
        encoded["sentence"] = inputs
        return encoded

    def forward(self, model_inputs):
        return {"logits": self.model(**model_inputs).logits}

    def postprocess(self, outputs, aggregation_strategy: str = "none", ignore_labels: Sequence[str] = ("O",)):
        logits = outputs["logits"][0].float().numpy()
        shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
        scores = shifted / shifted.sum(axis=-1, keepdims=True)
        tokens = self._pre_entities(outputs, scores, aggregation_strategy)
        if aggregation_strategy in ("none", "simple"):
            entities = [self._token_entity(t) for t in tokens]
        else:
            entities = [self._word_entity(word, aggregation_strategy) for word in self._words(tokens)]
        if aggregation_strategy != "none":
            entities = self._group(entities)
        return [e for e in entities
                if e.get("entity") not in ignore_labels and e.get("entity_group") not in ignore_labels]

    def _pre_entities(self, outputs, scores: np.ndarray, strategy: str) -> List[dict]:
        """One dict per non-special token: its token string, scores, character span, sub-word flag."""
        sentence = outputs["sentence"]
        input_ids = outputs["input_ids"][0].tolist()
        has_prefix = bool(getattr(self.tokenizer.backend_tokenizer.model, "continuing_subword_prefix", None))
        unk_id = self.tokenizer.unk_token_id
        if not has_prefix and strategy in ("first", "average", "max"):
            warnings.warn("Tokenizer does not support real words, using fallback heuristic", UserWarning)
        tokens = []
        for index, (token_id, (start, end), special) in enumerate(
                zip(input_ids, outputs["offset_mapping"], outputs["special_tokens_mask"])):
            if special:
                continue
            word = self.tokenizer.convert_ids_to_tokens(token_id)
            source = sentence[start:end]
            if has_prefix:  # WordPiece: a '##piece' is longer than its text
                is_subword = len(word) != len(source)
            else:  # BPE/Unigram: a piece glued to the character before it
                is_subword = start > 0 and " " not in sentence[start - 1:start + 1]
            if token_id == unk_id:
                word, is_subword = source, False
            tokens.append({"word": word, "scores": scores[index], "start": start, "end": end, "index": index,
                           "is_subword": is_subword})
        return tokens

    def _label(self, index) -> str:
        return self.model.config.id2label[int(index)]

    def _token_entity(self, token: dict) -> dict:
        best = token["scores"].argmax()
        return {"entity": self._label(best), "score": token["scores"][best], "index": token["index"],
                "word": token["word"], "start": token["start"], "end": token["end"]}

    @staticmethod
    def _words(tokens: List[dict]) -> List[List[dict]]:
        words: List[List[dict]] = []
        for token in tokens:
            if words and token["is_subword"]:
                words[-1].append(token)
            else:
                words.append([token])
        return words

    def _word_entity(self, pieces: List[dict], strategy: str) -> dict:
        if strategy == "first":
            scores = pieces[0]["scores"]
        elif strategy == "max":
            scores = max(pieces, key=lambda p: p["scores"].max())["scores"]
        else:  # average
            scores = np.nanmean(np.stack([p["scores"] for p in pieces]), axis=0)
        best = scores.argmax()
        return {"entity": self._label(best), "score": scores[best],
                "word": self.tokenizer.convert_tokens_to_string([p["word"] for p in pieces]),
                "start": pieces[0]["start"], "end": pieces[-1]["end"]}

    def _group(self, entities: List[dict]) -> List[dict]:
        """Merge runs of adjacent entities of one type; a 'B-' label starts a new run."""
        runs: List[List[dict]] = []
        for entity in entities:
            bi, tag = _tag(entity["entity"])
            if runs and bi != "B" and tag == _tag(runs[-1][-1]["entity"])[1]:
                runs[-1].append(entity)
            else:
                runs.append([entity])
        return [{"entity_group": run[0]["entity"].split("-", 1)[-1],
                 "score": np.mean(np.nanmean([e["score"] for e in run])),
                 "word": self.tokenizer.convert_tokens_to_string([e["word"] for e in run]),
                 "start": run[0]["start"], "end": run[-1]["end"]} for run in runs]
