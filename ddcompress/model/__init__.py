"""The denoiser network (float, as trained), its checkpoints (safetensors + config, the model id) and
the registry of models by name."""
