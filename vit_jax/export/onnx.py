"""ONNX through the PyTorch model this package already writes (Hugging Face layout).

Why this route: `jax2tf` + `tf2onnx` no longer works with current JAX, and `jax2onnx` (0.17.1)
pins `orbax-checkpoint<0.11.37` (we need 0.12) and pulls equinox, dm-pix and netron. The Hugging
Face export already builds a PyTorch ViT that matches ours, so `torch.onnx.export` of it (the
dynamo exporter, batch dimension dynamic) adds only `onnx`/`onnxscript` to the `export` extra.
The ONNX model takes `pixel_values` NCHW in [-1, 1] and returns `logits`.
"""

import os
import tempfile
from typing import Any

from vit_jax.export import hf


def export(params: Any, model_config, num_classes: int, image_size: int, out_path: str) -> str:
  # torch and transformers come with the export extra.
  import torch  # pylint: disable=g-import-not-at-top
  from transformers import ViTForImageClassification  # pylint: disable=g-import-not-at-top
  with tempfile.TemporaryDirectory() as hf_dir:
    hf.export(params, model_config, num_classes, image_size, hf_dir)
    model = ViTForImageClassification.from_pretrained(hf_dir).eval()
  example = torch.zeros((2, 3, image_size, image_size), dtype=torch.float32)
  os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
  torch.onnx.export(model, (example,), out_path, input_names=['pixel_values'],
                    output_names=['logits'],
                    dynamic_shapes={'pixel_values': {0: torch.export.Dim('batch')}},
                    dynamo=True, external_data=False)
  return out_path
