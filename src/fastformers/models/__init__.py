"""One module per architecture: its config class, modules, heads and `MODEL_CLASSES` (task -> class)."""
