"""zero-shot-classification: NLI-based. Each (sequence, candidate label) becomes a premise / hypothesis pair,
the model's entailment logit says how well the label fits; scores are a softmax of those logits over the
labels (multi_label=False) or, per label, a softmax of [contradiction, entailment] (multi_label=True)."""

from __future__ import annotations

from typing import Any, Dict, Iterable, Iterator, List

import numpy as np

from .base import Pipeline, batches

DEFAULT_TEMPLATE = "This example is {}."


def _parse_labels(labels: Any) -> List[str]:
    if isinstance(labels, str):
        return [label.strip() for label in labels.split(",") if label.strip()]
    return list(labels) if labels is not None else []


def _label_id(label2id: Dict[str, int], prefix: str) -> int:
    for label, index in label2id.items():
        if str(label).lower().startswith(prefix):
            return int(index)
    return -1


class ZeroShotClassificationPipeline(Pipeline):
    task = "zero-shot-classification"

    @property
    def entailment_id(self) -> int:
        return _label_id(self.model.config.label2id or {}, "entail")

    @property
    def contradiction_id(self) -> int:
        found = _label_id(self.model.config.label2id or {}, "contra")
        if found != -1:
            return found
        return -1 if self.entailment_id == 0 else 0  # transformers' rule when no label is named so

    def sanitize_parameters(self, candidate_labels: Any = None, hypothesis_template: str = DEFAULT_TEMPLATE,
                            multi_label: bool = False, **kwargs: Any):
        if kwargs:
            raise TypeError(f"{self.task} pipeline got unexpected arguments: {', '.join(sorted(kwargs))}")
        labels = _parse_labels(candidate_labels)
        if candidate_labels is not None:  # checked again, with the inputs, at call time
            self._check(labels, hypothesis_template)
        return ({"candidate_labels": labels, "hypothesis_template": hypothesis_template},
                {"multi_label": bool(multi_label)})

    @staticmethod
    def _check(labels: List[str], template: str) -> None:
        if not labels:
            raise ValueError("You must include at least one label and at least one sequence.")
        try:
            formatted = template.format(labels[0])
        except (IndexError, KeyError, ValueError) as error:
            raise ValueError(f'The provided hypothesis_template "{template}" was not able to be formatted with the '
                             f"target labels ({error}). Make sure the passed template includes formatting syntax "
                             "such as {} where the label should go.") from error
        if formatted == template:
            raise ValueError(f'The provided hypothesis_template "{template}" was not able to be formatted with the '
                             "target labels. Make sure the passed template includes formatting syntax such as {} "
                             "where the label should go.")

    def __call__(self, sequences: Any, *args: Any, **kwargs: Any) -> Any:
        if len(args) == 1 and "candidate_labels" not in kwargs:
            kwargs["candidate_labels"] = args[0]
        elif args:
            raise ValueError(f"Unable to understand extra arguments {args}")
        return super().__call__(sequences, **kwargs)

    def preprocess(self, inputs: Any, candidate_labels=(), hypothesis_template=DEFAULT_TEMPLATE) -> List[Dict]:
        """One tokenized (sequence, hypothesis) pair per candidate label."""
        if not isinstance(inputs, str):
            raise ValueError(f"{self.task} takes strings, got {type(inputs).__name__}")
        self._check(list(candidate_labels), hypothesis_template)
        items = []
        for label in candidate_labels:
            hypothesis = hypothesis_template.format(label)
            try:
                encoded = self.tokenizer(inputs, hypothesis, truncation="only_first")
            except Exception as error:  # the premise cannot be cut to fit: do not truncate, as transformers
                if "too short" not in str(error):
                    raise
                encoded = self.tokenizer(inputs, hypothesis, truncation=False)
            items.append(encoded)
        return items

    def forward(self, model_inputs):
        return {"logits": self.model(**model_inputs).logits}

    def _run(self, inputs: Iterable, batch_size: int, pre: dict, post: dict) -> Iterator[Any]:
        if self.entailment_id == -1:
            raise ValueError("zero-shot-classification: could not find the entailment label in the model config's "
                             f"label2id {dict(self.model.config.label2id or {})}; it needs a label starting with "
                             "'entail' (e.g. 'entailment')")
        labels = pre["candidate_labels"]
        for chunk in batches(inputs, batch_size):
            pairs = [item for sequence in chunk for item in self.preprocess(sequence, **pre)]
            logits = []
            for start in range(0, len(pairs), batch_size):
                for outputs in self._forward_batch(pairs[start:start + batch_size]):
                    logits.append(outputs["logits"][0].float().numpy())
            logits = np.stack(logits).reshape(len(chunk), len(labels), -1)
            for sequence, rows in zip(chunk, logits):
                yield self.postprocess({"sequence": sequence, "labels": labels, "logits": rows}, **post)

    def postprocess(self, outputs, multi_label: bool = False):
        logits, labels = outputs["logits"], outputs["labels"]
        if multi_label or len(labels) == 1:
            pair = logits[:, [self.contradiction_id, self.entailment_id]]
            pair = np.exp(pair - pair.max(axis=-1, keepdims=True))
            scores = (pair / pair.sum(axis=-1, keepdims=True))[:, 1]
        else:
            entail = logits[:, self.entailment_id]
            entail = np.exp(entail - entail.max())
            scores = entail / entail.sum()
        order = list(reversed(scores.argsort()))
        return {"sequence": outputs["sequence"], "labels": [labels[i] for i in order],
                "scores": scores[order].tolist()}
