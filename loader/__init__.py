"""DALI loaders: clips from shards (CPU decode) or a verified local cache (GPU NVDEC) into Paddle tensors."""
