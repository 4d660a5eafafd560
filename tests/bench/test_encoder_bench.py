"""The encoder benchmark's smoke run: ONNX Runtime exported from the same weights agrees with transformers, and every
engine's row is there with a finite, positive time (the full numbers are for the closing note and bench/results/)."""

import math

from fastformers.bench import encoder, ort_anchor


def test_ort_anchor_exports_fused_graph_that_agrees(tmp_path):
    from fastformers.pipelines.defaults import default_embedding_model

    assert ort_anchor.missing() is None, ort_anchor.missing()  # onnxruntime is in the test extra
    paths = ort_anchor.export_encoder(default_embedding_model(), str(tmp_path))
    fused = ort_anchor.fused_operators(paths["float32"])
    # The optimizer recognised the exported graph: one fused attention and two SkipLayerNorms per layer (6 layers).
    assert fused["Attention"] == 6 and fused["SkipLayerNormalization"] == 12 and fused["BiasGelu"] == 6, fused


def test_encoder_suite_smoke():
    rows = encoder.run(quick=True, dtypes=("int8",), cases=("batch1",))
    by = {(r.provider, r.metric): r.value for r in rows}
    assert by[("fastformers", "max_abs_diff")] < 1e-4
    assert by[("onnxruntime", "max_abs_diff")] < 1e-4
    assert by[("fastformers-w8a8", "min_token_cosine")] > 0.98
    assert by[("fastformers-int8-blocks", "min_token_cosine")] > 0.99  # the bound for int8
    assert by[("fastformers-w8a8-ffn-blocks", "min_token_cosine")] > 0.99
    assert by[("onnxruntime-int8", "min_token_cosine")] > 0.9
    for engine in ("transformers", "fastformers", "onnxruntime", "onnxruntime-int8", "fastformers-w8a8",
                   "fastformers-int8-blocks", "fastformers-w8a8-ffn-blocks"):
        value = by[(engine, "median_ms")]
        assert math.isfinite(value) and value > 0, (engine, value)
        first = by[(engine, "first_call_ms")]  # the first case reports each engine's first call
        assert math.isfinite(first) and first > 0, (engine, first)
    assert by[("fastformers", "speedup_vs_onnxruntime")] > 0


def test_corpus_lengths_spread_from_5_to_120_tokens():
    import transformers

    from fastformers.pipelines.defaults import default_embedding_model

    tokenizer = transformers.AutoTokenizer.from_pretrained(default_embedding_model())
    lengths = [len(tokenizer(s)["input_ids"]) for s in encoder.corpus(tokenizer, 64)]
    assert min(lengths) <= 12 and max(lengths) >= 80 and all(4 <= n <= 124 for n in lengths), lengths
