"""fastformers benchmarks: one runner (`python -m bench`), rows of (name, provider, shape, dtype, metric, value)."""
