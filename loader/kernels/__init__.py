"""CUDA kernels the loader ships as source and PTX (loader.handover loads them)."""
