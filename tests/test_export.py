"""Exports: each format gives our model's logits in its own runtime."""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from safetensors import numpy as safetensors_numpy
import torch  # the export extra: pip install -e ".[test,export]"

from vit_jax import checkpoint
from vit_jax import export as export_cli
from vit_jax import models
from vit_jax.configs import models as model_configs
from vit_jax.export import hf
from vit_jax.export import hf as hf_export
from vit_jax.export import stablehlo
from vit_jax.export import timm as timm_export
from vit_jax.train import loop
from vit_jax.weights import trained_model

from support import in_process
from support import randomize
from support import tiny_vit_config
import tiny_recipe


def _saved(tmp_path, name='model.npz', image_size=16, **overrides):
  config = tiny_vit_config(**overrides)
  model = models.VisionTransformer(num_classes=7, **config)
  params = model.init(jax.random.key(0), jnp.ones((1, image_size, image_size, 3)),
                      train=False)['params']
  params = jax.tree.map(np.asarray, randomize(params, scale=0.3))
  checkpoint.save(params, str(tmp_path / name))
  return model, params, str(tmp_path / name)


def _images(size=16, batch=3, seed=1):
  return np.random.default_rng(seed).uniform(-1, 1, (batch, size, size, 3)).astype(np.float32)


def _ours(model, params, images):
  return np.asarray(model.apply({'params': params}, images, train=False))


@pytest.fixture(scope='module')
def trained(digits_data_dir, tmp_path_factory):
  """A model trained by the runner (12 steps of the tiny digits recipe)."""
  workdir = str(tmp_path_factory.mktemp('trained'))
  loop.train_and_evaluate(tiny_recipe.get_config(digits_data_dir), workdir)
  return workdir, trained_model.load(workdir)


def test_npz_round_trip_is_exact(trained, tmp_path):
  workdir, loaded = trained
  out = export_cli.export(workdir, 'npz', str(tmp_path / 'run.npz'))
  restored = checkpoint.load(out)
  jax.tree.map(np.testing.assert_array_equal, restored, loaded.params)


def test_hugging_face_gives_the_same_logits(trained, tmp_path):
  # PyTorch: imported only by the tests that build a reference.
  from transformers import ViTForImageClassification  # pylint: disable=g-import-not-at-top
  workdir, loaded = trained
  out = export_cli.export(workdir, 'hf', str(tmp_path / 'hf'), labels=[str(d) for d in range(10)])
  config = json.load(open(os.path.join(out, 'config.json')))
  assert (config['hidden_act'], config['layer_norm_eps'], config['id2label']['3']) == (
      'gelu_pytorch_tanh', 1e-6, '3')
  hf_model = ViTForImageClassification.from_pretrained(out).eval()
  images = _images()
  with torch.no_grad():
    theirs = hf_model(pixel_values=torch.from_numpy(images.transpose(0, 3, 1, 2))).logits.numpy()
  ours = _ours(loaded.model, loaded.params, images)
  np.testing.assert_allclose(theirs, ours, rtol=1e-4, atol=1e-5)
  assert np.array_equal(theirs.argmax(-1), ours.argmax(-1))


def test_hugging_face_exact_gelu_and_sincos(tmp_path):
  # PyTorch: imported only by the tests that build a reference.
  from transformers import ViTForImageClassification  # pylint: disable=g-import-not-at-top
  model, params, path = _saved(tmp_path, gelu_approximate=False, posemb='sincos2d')
  # The .npz has no posemb (sincos is fixed): build the model config explicitly.
  config = tiny_vit_config(gelu_approximate=False, posemb='sincos2d')
  hf.export(params, config, 7, 16, str(tmp_path / 'hf'))
  assert json.load(open(tmp_path / 'hf' / 'config.json'))['hidden_act'] == 'gelu'
  hf_model = ViTForImageClassification.from_pretrained(str(tmp_path / 'hf')).eval()
  images = _images()
  with torch.no_grad():
    theirs = hf_model(pixel_values=torch.from_numpy(images.transpose(0, 3, 1, 2))).logits.numpy()
  np.testing.assert_allclose(theirs, _ours(model, params, images), rtol=1e-4, atol=1e-5)
  del path


def test_onnx_runs_in_onnxruntime(trained, tmp_path):
  # the ONNX export's reference, imported only here.
  import onnxruntime  # pylint: disable=g-import-not-at-top
  workdir, loaded = trained
  out = export_cli.export(workdir, 'onnx', str(tmp_path / 'model.onnx'))
  session = onnxruntime.InferenceSession(out)
  for batch in (1, 5):  # the batch dimension is dynamic
    images = _images(batch=batch)
    (logits,) = session.run(['logits'], {'pixel_values': images.transpose(0, 3, 1, 2).copy()})
    np.testing.assert_allclose(logits, _ours(loaded.model, loaded.params, images), rtol=1e-4,
                               atol=1e-5)


def test_stablehlo_runs_without_model_code(trained, tmp_path):
  workdir, loaded = trained
  out = export_cli.export(workdir, 'stablehlo', str(tmp_path / 'shlo'))
  images = _images(batch=4)
  np.save(tmp_path / 'images.npy', images)
  script = (
      'import sys, numpy as np\n'
      'from vit_jax.export import stablehlo\n'
      f'logits = np.asarray(stablehlo.load({out!r})(np.load({str(tmp_path / "images.npy")!r})))\n'
      f'np.save({str(tmp_path / "logits.npy")!r}, logits)\n'
      'assert not [m for m in sys.modules if m.startswith(("vit_jax.models", "flax"))], "model code"\n')
  subprocess.run([sys.executable, '-c', script], check=True, timeout=300)
  np.testing.assert_allclose(np.load(tmp_path / 'logits.npy'),
                             _ours(loaded.model, loaded.params, images), rtol=1e-6, atol=1e-6)
  run = stablehlo.load(out)
  assert run(_images(batch=7)).shape == (7, 10)  # symbolic batch
  assert 'stablehlo' in open(os.path.join(out, 'model.mlir')).read()


def _timm_forward(state, spec, images):
  """timm's VisionTransformer forward written out over the exported state dict (timm itself
  needs torchvision, which has no CPU build on these machines)."""
  f = torch.nn.functional
  args = spec['args']
  t = {k: torch.from_numpy(v) for k, v in state.items()}
  x = f.conv2d(torch.from_numpy(images.transpose(0, 3, 1, 2)), t['patch_embed.proj.weight'],
               t['patch_embed.proj.bias'], stride=args['patch_size'])
  x = x.flatten(2).transpose(1, 2)
  if args['class_token']:
    x = torch.cat([t['cls_token'].expand(x.shape[0], -1, -1), x], dim=1)
  x = x + t['pos_embed']
  heads = args['num_heads']
  act = (lambda v: f.gelu(v, approximate='tanh')) if args['act_layer'] == 'gelu_tanh' else f.gelu
  for i in range(args['depth']):
    p = f'blocks.{i}.'
    y = f.layer_norm(x, (x.shape[-1],), t[p + 'norm1.weight'], t[p + 'norm1.bias'], eps=1e-6)
    b, n, c = y.shape
    qkv = f.linear(y, t[p + 'attn.qkv.weight'], t[p + 'attn.qkv.bias'])
    q, k, v = qkv.reshape(b, n, 3, heads, c // heads).permute(2, 0, 3, 1, 4)
    y = f.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, c)
    x = x + f.linear(y, t[p + 'attn.proj.weight'], t[p + 'attn.proj.bias'])
    y = f.layer_norm(x, (c,), t[p + 'norm2.weight'], t[p + 'norm2.bias'], eps=1e-6)
    y = f.linear(act(f.linear(y, t[p + 'mlp.fc1.weight'], t[p + 'mlp.fc1.bias'])),
                 t[p + 'mlp.fc2.weight'], t[p + 'mlp.fc2.bias'])
    x = x + y
  x = f.layer_norm(x, (x.shape[-1],), t['norm.weight'], t['norm.bias'], eps=1e-6)
  x = x[:, 0] if args['global_pool'] == 'token' else x.mean(1)
  return f.linear(x, t['head.weight'], t['head.bias']).numpy()


@pytest.mark.parametrize('classifier', ['token', 'gap'])
def test_timm_state_dict_and_spec(tmp_path, classifier):
  model, params, path = _saved(tmp_path, classifier=classifier)
  out = export_cli.export(path, 'timm', str(tmp_path / 'timm'))
  state = safetensors_numpy.load_file(os.path.join(out, 'model.safetensors'))
  spec = json.load(open(os.path.join(out, 'timm_model.json')))
  assert spec['args']['act_layer'] == 'gelu_tanh' and spec['args']['embed_dim'] == 16
  assert spec['args']['global_pool'] == ('token' if classifier == 'token' else 'avg')
  assert state['blocks.0.attn.qkv.weight'].shape == (48, 16)
  assert state['patch_embed.proj.weight'].shape == (16, 3, 4, 4)
  images = _images()
  np.testing.assert_allclose(_timm_forward(state, spec, images), _ours(model, params, images),
                             rtol=1e-4, atol=1e-5)


def test_timm_names_the_standard_architectures():
  spec = timm_export.timm_model_spec(model_configs.get_config('ViT-B_16'), 1000, 224)
  assert spec['architecture'] == 'vit_base_patch16_224' and spec['args']['mlp_ratio'] == 4.0


@pytest.mark.parametrize('overrides,message', [
    ({'resnet': {'num_layers': (1,), 'width_factor': 1}, 'patches': {'size': (1, 1)}},
     'hybrid ResNet stem'),
    ({'classifier': 'map'}, 'MAP'),
    ({'classifier': 'gap'}, 'global average pooling'),
    ({'representation_size': 8}, 'pre_logits'),
    ({'posemb': 'none', 'rel_pos_bias': True}, 'no position table.*relative position bias'),
])
def test_formats_refuse_what_they_cannot_hold(tmp_path, overrides, message):
  size = 32 if 'resnet' in overrides else 16
  _, _, path = _saved(tmp_path, image_size=size, **overrides)
  with pytest.raises(ValueError, match=f'Hugging Face ViT format cannot hold this model.*{message}'):
    export_cli.export(path, 'hf', str(tmp_path / 'hf'))


@pytest.mark.parametrize('fmt', ['hf', 'timm'])
def test_rotary_embeddings_are_refused_not_dropped(tmp_path, fmt):
  """A model with axial RoPE (an EVA-02 or ROPE-ViT import, whose config says so) is refused:
  a plain ViT file would drop the rotation and give other logits."""
  config = tiny_vit_config(rope='axial', posemb='none')
  params = models.VisionTransformer(num_classes=7, **config).init(
      jax.random.key(0), jnp.ones((1, 16, 16, 3)), train=False)['params']
  write = hf_export.export if fmt == 'hf' else timm_export.export
  with pytest.raises(ValueError, match="rotary position embeddings \\(rope='axial'"):
    write(params, config, 7, 16, str(tmp_path / fmt))


def test_command_line(tmp_path):
  _, params, path = _saved(tmp_path)
  result = in_process.run(
      [sys.executable, '-m', 'vit_jax.export', f'--checkpoint={path}', '--format=npz',
       f'--out={tmp_path / "copy.npz"}'])
  assert result.returncode == 0, result.stderr[-2000:]
  jax.tree.map(np.testing.assert_array_equal, checkpoint.load(str(tmp_path / 'copy.npz')), params)
  with pytest.raises(ValueError, match="Unknown export format 'tflite'"):
    export_cli.export(path, 'tflite', str(tmp_path / 'x'))
