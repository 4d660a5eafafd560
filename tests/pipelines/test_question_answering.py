"""question-answering: transformers 5 has no such pipeline, so the reference is transformers 4's algorithm
restated plainly below (`reference`), run on the start/end logits of transformers' own model over the same
windows. Two tokenizer families: WordPiece (tiny BERT, MiniLM's tokenizer) and byte-level BPE (tiny RoBERTa)."""

import copy
import random

import pytest
import torch
import transformers
from conftest import build_reference
from pipeline_models import assert_same, byte_level_bpe, saved_model

import fastformers

WORDS = [
    "the", "a", "of", "Berlin", "Paris", "café", "naïve", "São", "Paulo", "🍕", "résumé,", "Straße!", "über-cool",
    "x-ray", "don't", "(Müller)", "42", "3.14", "New", "York", "City.", "Hugging", "Face", "Inc.", "zyxwv",
    "ångström", "ÉCOLE", "co-operate", "U.S.A.", "e-mail", "@home", "#tag", "東京", "мир", "Sarah", "works", "at",
    "the", "bakery", "near", "river;", '"quoted"', "it's"
]


def _text(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n))


def _examples(seed: int, count: int, max_words: int = 60):
    rng = random.Random(seed)
    return [{"question": _text(rng, rng.randint(1, 6)) + "?", "context": _text(rng, rng.randint(1, max_words))}
            for _ in range(count)]


def _bpe_roberta(tmp_path_factory) -> str:
    tokenizer = byte_level_bpe(128, cls_token="<s>", sep_token="</s>")
    path, _ = build_reference("roberta", "AutoModelForQuestionAnswering", tmp_path_factory.mktemp("qa-bpe"),
                              vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                              intermediate_size=37, max_position_embeddings=130, pad_token_id=1)
    tokenizer.save_pretrained(path)
    return str(path)


@pytest.fixture(scope="module", params=["bert", "roberta-bpe"])
def qa(tmp_path_factory, request):
    """(our pipeline, transformers' model, transformers' tokenizer) on one saved tiny model."""
    if request.param == "bert":
        path = saved_model(tmp_path_factory, "AutoModelForQuestionAnswering")
    else:
        path = _bpe_roberta(tmp_path_factory)
    hf_model = transformers.AutoModelForQuestionAnswering.from_pretrained(path)
    with torch.no_grad():
        hf_model.qa_outputs.weight.mul_(4)  # peaked start/end distributions: no near-ties between spans
    hf_model.save_pretrained(path)
    hf_model.eval()
    return (fastformers.pipeline("question-answering", model=path), hf_model,
            transformers.AutoTokenizer.from_pretrained(path))


def _softmax(logits, keep):
    """float64 softmax over the tokens in `keep`; 0 elsewhere."""
    values = [float(x) for x in logits]
    top = max(v for v, k in zip(values, keep) if k)
    exps = [torch.tensor(v - top, dtype=torch.float64).exp().item() if k else 0.0 for v, k in zip(values, keep)]
    total = sum(exps)
    return [x / total for x in exps]


def reference(hf_model, hf_tok, question, context, top_k=1, max_answer_len=15, max_seq_len=None, doc_stride=None,
              handle_impossible_answer=False, align_to_words=True):
    """transformers 4's QuestionAnsweringPipeline (fast-tokenizer path), one window and one span at a time."""
    max_seq_len = max_seq_len or min(hf_tok.model_max_length, 384)
    doc_stride = min(max_seq_len // 2, 128) if doc_stride is None else doc_stride
    enc = hf_tok(question, context, truncation="only_second", max_length=max_seq_len, stride=doc_stride,
                 return_overflowing_tokens=True, return_offsets_mapping=True)
    answers, null_score = [], 1000000.0
    for w, ids in enumerate(enc["input_ids"]):
        seq, words, offsets, n = enc.sequence_ids(w), enc.word_ids(w), enc["offset_mapping"][w], len(ids)
        with torch.no_grad():
            out = hf_model(**{k: torch.tensor([enc[k][w]]) for k in hf_tok.model_input_names})
        keep = [seq[i] == 1 or ids[i] == hf_tok.cls_token_id for i in range(n)]  # context, and CLS for "no answer"
        p_start, p_end = _softmax(out.start_logits[0], keep), _softmax(out.end_logits[0], keep)
        if handle_impossible_answer:
            null_score = min(null_score, p_start[0] * p_end[0])
        spans = [(p_start[s] * p_end[e], s, e) for s in range(1, n) for e in range(s, min(n, s + max_answer_len))
                 if seq[s] == 1 and seq[e] == 1]
        spans.sort(key=lambda span: -span[0])
        for score, s, e in spans[:top_k * 2 + 10 if align_to_words else top_k]:
            if align_to_words:  # widen to the whole words of the first and last token (within this window)
                start = min(offsets[i][0] for i in range(n) if seq[i] == 1 and words[i] == words[s])
                end = max(offsets[i][1] for i in range(n) if seq[i] == 1 and words[i] == words[e])
            else:
                start, end = offsets[s][0], offsets[e][1]
            text = context[start:end]
            same = [a for a in answers if a["answer"].lower() == text.lower()]
            if same:  # one answer per text: scores add up
                same[0]["score"] += score
            else:
                answers.append({"score": score, "start": start, "end": end, "answer": text})
    if handle_impossible_answer:
        answers.append({"score": null_score, "start": 0, "end": 0, "answer": ""})
    answers = sorted(answers, key=lambda a: a["score"], reverse=True)[:top_k]
    return answers[0] if len(answers) == 1 else answers


SETTINGS = [{}, {"top_k": 3}, {"top_k": 5, "align_to_words": False}, {"top_k": 4, "max_answer_len": 3},
            {"handle_impossible_answer": True, "top_k": 2}]


@pytest.mark.parametrize("settings", SETTINGS, ids=lambda s: ",".join(f"{k}={v}" for k, v in s.items()) or "default")
def test_matches_reference(qa, settings):
    ours, hf_model, hf_tok = qa
    for example in _examples(seed=len(str(settings)), count=10):
        expected = reference(hf_model, hf_tok, **example, **settings)
        assert_same(ours(**example, **settings), expected, where=repr(example))
    assert_same(ours(_examples(7, 4), **settings), [reference(hf_model, hf_tok, **e, **settings)
                                                   for e in _examples(7, 4)])


def test_answers_are_exact_spans(qa):
    ours = qa[0]
    examples = _examples(seed=11, count=40)
    for align in (True, False):
        for example, answers in zip(examples, ours(examples, top_k=5, align_to_words=align, batch_size=8)):
            for answer in answers if isinstance(answers, list) else [answers]:
                assert answer["answer"] == example["context"][answer["start"]:answer["end"]], (example, answer)
                assert answer["answer"], (example, answer)  # (a byte-level BPE span may end on a space token)
                assert isinstance(answer["score"], float) and 0 < answer["score"]
                assert type(answer["start"]) is int and type(answer["end"]) is int


def test_long_context_answer_in_a_later_window(qa):
    ours, hf_model, hf_tok = qa
    settings = {"max_seq_len": 40, "doc_stride": 8}
    rng = random.Random(3)
    found = 0
    for _ in range(8):
        example = {"question": "Where does Sarah work?", "context": _text(rng, 80)}
        windows = hf_tok(example["question"], example["context"], truncation="only_second", max_length=40, stride=8,
                         return_overflowing_tokens=True, return_offsets_mapping=True)
        assert len(windows["input_ids"]) >= 3
        first_window_end = max(end for (_, end), sid in zip(windows["offset_mapping"][0], windows.sequence_ids(0))
                               if sid == 1)
        expected = reference(hf_model, hf_tok, **example, **settings)
        assert_same(ours(**example, **settings), expected)
        assert_same(ours(**example, top_k=3, **settings), reference(hf_model, hf_tok, **example, top_k=3, **settings))
        found += expected["start"] >= first_window_end
    assert found >= 2, "some best answers should lie past the first window"


def test_impossible_answer(qa, tmp_path):
    """A copy of the model whose CLS embedding leans towards the start/end directions, so that the null answer
    (p_start[CLS] * p_end[CLS]) wins for some inputs and not for others."""
    _, hf_model, hf_tok = qa
    hf_model = copy.deepcopy(hf_model)
    with torch.no_grad():
        direction = hf_model.qa_outputs.weight.sum(0)
        hf_model.get_input_embeddings().weight[hf_tok.cls_token_id] += 2 * direction / direction.norm()
    hf_model.save_pretrained(tmp_path)
    hf_tok.save_pretrained(tmp_path)
    ours = fastformers.pipeline("question-answering", model=str(tmp_path))
    rng = random.Random(5)
    nulls = 0
    for _ in range(40):
        example = {"question": _text(rng, 5) + "?", "context": _text(rng, rng.randint(1, 3))}
        expected = reference(hf_model, hf_tok, **example, handle_impossible_answer=True)
        result = ours(**example, handle_impossible_answer=True)
        assert_same(result, expected)
        if result["answer"] == "":
            nulls += 1
            assert list(result) == ["score", "start", "end", "answer"] and result["start"] == result["end"] == 0
            assert ours(**example)["answer"] != "", "without handle_impossible_answer there is always a span"
    assert nulls, "the null answer should win for some of these short contexts"


def test_top_k_ordering(qa):
    ours = qa[0]
    for example in _examples(seed=13, count=8, max_words=20):
        answers = ours(**example, top_k=6)
        answers = answers if isinstance(answers, list) else [answers]
        scores = [a["score"] for a in answers]
        assert scores == sorted(scores, reverse=True) and len(answers) <= 6
        assert len({a["answer"].lower() for a in answers}) == len(answers), "one answer per text"


def test_batch_size_and_generators(qa):
    ours = qa[0]
    examples = _examples(seed=17, count=7) + [{"question": "Where?", "context": _text(random.Random(1), 120)}]
    one = ours(examples, top_k=2)
    assert_same(ours(examples, top_k=2, batch_size=3), one, tol=1e-5)
    assert_same(list(ours((e for e in examples), top_k=2, batch_size=4)), one, tol=1e-5)
    batched = fastformers.pipeline("question-answering", model=ours.model, tokenizer=ours.tokenizer, batch_size=5,
                                   top_k=2)
    assert_same(batched(examples), one, tol=1e-5)


def test_input_forms(qa):
    ours = qa[0]
    question, context = "Where does Sarah work?", "Sarah works at the bakery in Paris, near the river."
    single = ours(question=question, context=context)
    assert isinstance(single, dict) and list(single) == ["score", "start", "end", "answer"]
    assert_same(ours({"question": question, "context": context}), single)
    assert_same(ours(question, context), single)
    assert_same(ours([{"question": question, "context": context}]), single)  # transformers 4 unwraps a list of one
    assert_same(ours(question=[question], context=context), single)
    top = ours(question=question, context=context, top_k=3)
    assert isinstance(top, list) and len(top) == 3 and all(isinstance(a, dict) for a in top)
    many = ours(question=[question, "Who?"], context=context)
    assert isinstance(many, list) and len(many) == 2 and many[0] == single
    assert ours(question=[question, "Who?"], context=[context, context]) == many
    lazy = ours({"question": q, "context": context} for q in (question, "Who?"))
    assert not isinstance(lazy, list) and list(lazy) == many
    assert ours([]) == []


def test_default_model_is_registered():
    task = fastformers.pipelines.SUPPORTED_TASKS["question-answering"]
    assert task.auto_class == "AutoModelForQuestionAnswering"
    assert task.default_model == "distilbert/distilbert-base-cased-distilled-squad"


@pytest.mark.parametrize("call, error, match", [
    (lambda qa: qa(question="Where?"), ValueError, "missing `context`"),
    (lambda qa: qa(context="Paris."), ValueError, "missing `question`"),
    (lambda qa: qa(question="Where?", context=""), ValueError, "`context` cannot be empty"),
    (lambda qa: qa(question="Where?", context="   "), ValueError, "`context` cannot be empty"),
    (lambda qa: qa(question="", context="Paris."), ValueError, "`question` cannot be empty"),
    (lambda qa: qa(question=None, context="Paris."), ValueError, "missing `question`"),
    (lambda qa: qa({"question": "Where?"}), KeyError, "'context'"),
    (lambda qa: qa([{"question": "Where?", "context": "Paris."}, "Paris"]), TypeError, "must be a dict"),
    (lambda qa: qa({"question": 3, "context": "Paris."}), TypeError, "`question` must be a string"),
    (lambda qa: qa(question=["a?", "b?"], context=["Paris."]), ValueError, "2 questions but 1 contexts"),
    (lambda qa: qa("Where?", context="Paris."), TypeError, "not both"),
    (lambda qa: qa(question="Where?", context="Paris.", top_k=0), ValueError, "top_k"),
    (lambda qa: qa(question="Where?", context="Paris.", top_k=1.5), TypeError, "top_k"),
    (lambda qa: qa(question="Where?", context="Paris.", max_answer_len=0), ValueError, "max_answer_len"),
    (lambda qa: qa(question="Where?", context="Paris.", doc_stride=64, max_seq_len=64), ValueError, "doc_stride"),
    (lambda qa: qa(question="Where?", context="Paris.", doc_stride=-1), ValueError, "doc_stride"),
    (lambda qa: qa(question="Where?", context="Paris.", max_seq_len=0), ValueError, "max_seq_len"),
    (lambda qa: qa(question="Where?", context="Paris.", padding="sideways"), ValueError, "padding"),
    (lambda qa: qa(question="Where?", context="Paris.", temperature=1.0), TypeError, "temperature"),
    (lambda qa: qa(42), ValueError, "inputs must be a dict"),
    (lambda qa: qa(question="Where is it? " * 20, context="Paris is nice. " * 40, max_seq_len=64, doc_stride=20,
                   max_question_len=60), ValueError, "doc_stride=20"),
])
def test_bad_inputs(qa, call, error, match):
    with pytest.raises(error, match=match):
        call(qa[0])


def test_bad_defaults_fail_at_construction(qa):
    ours = qa[0]
    with pytest.raises(ValueError, match="top_k"):
        fastformers.pipeline("question-answering", model=ours.model, tokenizer=ours.tokenizer, top_k=0)


def test_long_question_is_cut_to_max_question_len(qa):
    """transformers 4's fast path breaks in the tokenizer when the question leaves no room for the windows; here
    the question is cut to max_question_len tokens, which must then match asking the cut question."""
    ours, hf_model, hf_tok = qa
    question, context = "Where is the bakery near the river? " * 6, "Sarah works at the bakery. " * 30
    tokens = hf_tok(question, add_special_tokens=False, return_offsets_mapping=True)
    assert len(tokens["input_ids"]) > 40
    cut = question[:tokens["offset_mapping"][9][1]]
    settings = {"max_seq_len": 48, "doc_stride": 16}
    assert_same(ours(question=question, context=context, max_question_len=10, **settings),
                reference(hf_model, hf_tok, cut, context, **settings))
