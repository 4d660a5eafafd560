"""One encoder pipeline, freshly made, called from 4 threads at once: each caller gets the single-threaded result
(the first calls fuse the projections and bind the ops: one-time work that runs concurrently here)."""

from __future__ import annotations

import numpy as np

import fastformers
from pipeline_models import saved_model
from run_together import run_together

TEXTS = ["a first sentence", "the second one, a little longer than the first", "x", "numbers 1 2 3 4"]


def test_a_fresh_pipeline_from_four_threads(tmp_path_factory):
    path = saved_model(tmp_path_factory, "AutoModel")
    expected = [np.asarray(fastformers.pipeline("feature-extraction", model=path)(t)) for t in TEXTS]
    for _ in range(3):
        pipe = fastformers.pipeline("feature-extraction", model=path)
        got = run_together(lambda i: [np.asarray(pipe(TEXTS[i])) for _ in range(3)])
        for i in range(4):
            for out in got[i]:
                np.testing.assert_array_equal(out, expected[i])
