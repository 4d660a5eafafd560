"""fastformers benchmarks: one runner (`python -m fastformers.bench`), rows of (name, provider, shape, dtype, metric, value)."""
