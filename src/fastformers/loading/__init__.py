"""Where checkpoint bytes come from: hub resolution, safetensors, pytorch_model.bin (weights_only)."""
