"""Exports: official .npz, timm and Hugging Face safetensors, StableHLO, ONNX."""
