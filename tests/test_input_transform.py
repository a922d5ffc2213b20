"""The input transform travels with the model: a Hugging Face image processor's own output equals
ours on a real photograph (scikit-learn ships it), `infer` on an imported model equals the source
library run on the processor's input, exports write the transform back, and the README's
normalisation line (docs/weights.md) means what it says."""

import json
import os
import re
import shutil

import numpy as np
from PIL import Image
import pytest
import tensorflow as tf
import torch
import transformers

from vit_jax import evaluators
from vit_jax import infer
from vit_jax.data import images as images_lib
from vit_jax.data import naflex
from vit_jax.data import preprocess
from vit_jax.data import sources
from vit_jax.models import vit
from vit_jax.train import loop
from vit_jax.train import options as options_lib
from vit_jax.weights import trained_model
from vit_jax.weights import transforms

import tiny_recipe

WEIGHTS_DOC = os.path.join(os.path.dirname(__file__), '..', 'docs', 'weights.md')
COMMON = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=4, intermediate_size=64,
              image_size=224, patch_size=32, num_channels=3)


def _photo() -> str:
  return infer.example_image()


def _randomize(model):
  generator = torch.Generator().manual_seed(0)
  with torch.no_grad():
    for param in model.parameters():
      param.copy_(torch.randn(param.shape, generator=generator) * 0.2)
  return model.eval()


FAMILIES = {
    'deit': (lambda: transformers.DeiTForImageClassification(
        transformers.DeiTConfig(**COMMON, num_labels=5)), transformers.DeiTImageProcessor),
    'dinov2': (lambda: transformers.Dinov2ForImageClassification(
        transformers.Dinov2Config(**COMMON, num_labels=5)), transformers.BitImageProcessor),
    'clip': (lambda: transformers.CLIPVisionModelWithProjection(
        transformers.CLIPVisionConfig(**COMMON, projection_dim=5)),
             transformers.CLIPImageProcessor),
}


@pytest.mark.parametrize('family', sorted(FAMILIES))
def test_infer_equals_the_source_library_on_a_photograph(tmp_path, family):
  make_model, processor_class = FAMILIES[family]
  model = _randomize(make_model())
  model.save_pretrained(tmp_path)
  if family == 'dinov2':  # the processor DINOv2 checkpoints ship
    processor = processor_class(size={'shortest_edge': 256}, crop_size=224,
                                image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225],
                                do_convert_rgb=True)
  else:
    processor = processor_class()
  processor.save_pretrained(tmp_path)
  loaded = trained_model.load(str(tmp_path))

  theirs = processor(Image.open(_photo()).convert('RGB'), return_tensors='np')['pixel_values'][0]
  ours = images_lib.load(_photo(), loaded.pp)
  assert ours.shape == (224, 224, 3)
  difference = np.abs(ours - theirs.transpose(1, 2, 0))
  assert difference.mean() < 0.01 and np.quantile(difference, 0.99) < 0.05, loaded.pp

  with torch.no_grad():
    out = model(torch.from_numpy(theirs[None]))
  logits = (out.image_embeds if family == 'clip' else out.logits).numpy()[0]
  prediction = infer.run(checkpoint_path=str(tmp_path), top_k=5)[0]
  expected = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
  np.testing.assert_allclose(prediction.probabilities, np.sort(expected)[::-1], atol=2e-3)


def test_released_checkpoints_keep_the_official_transform():
  assert transforms.released(384) == 'resize(384)|value_range(-1, 1)'
  photo = images_lib.load(_photo(), 'resize(64)|value_range(-1, 1)')
  assert photo.min() >= -1 and photo.max() <= 1 and photo.min() < -0.5 < 0.5 < photo.max()


def test_hf_export_writes_the_transform_back(tmp_path):
  model = _randomize(transformers.Dinov2Model(transformers.Dinov2Config(**COMMON)))
  model.save_pretrained(tmp_path / 'in')
  transformers.BitImageProcessor(size={'shortest_edge': 256}, crop_size=224,
                                 image_mean=[0.485, 0.456, 0.406],
                                 image_std=[0.229, 0.224, 0.225]).save_pretrained(tmp_path / 'in')
  loaded = trained_model.load(str(tmp_path / 'in'))
  written = transforms.to_hf(loaded.pp, 224)
  again = transforms.from_hf(written, 'written')
  assert again == loaded.pp
  # A processor built from what we write gives the same pixels as the original processor.
  original = transformers.BitImageProcessor.from_pretrained(str(tmp_path / 'in'))
  rebuilt = transformers.BitImageProcessor(**{k: v for k, v in written.items()
                                              if k != 'image_processor_type'})
  photo = Image.open(_photo()).convert('RGB')
  np.testing.assert_allclose(rebuilt(photo, return_tensors='np')['pixel_values'],
                             original(photo, return_tensors='np')['pixel_values'], atol=1e-6)


def test_readme_normalization_line_runs_and_means_imagenet_statistics():
  """The docs' line for ImageNet-statistics models, run through the tf.data ops, equals
  (pixel / 255 - mean) / std of the same crop."""
  with open(WEIGHTS_DOC, encoding='utf-8') as f:
    line = re.search(r"pp='([^']*normalize[^']*)'", f.read()).group(1)
  image_ops = '|'.join(op for op in line.split('|') if not op.startswith(('onehot', 'keep')))
  assert image_ops.endswith(')') and 'normalize' in image_ops.rsplit('|', 1)[1]
  encoded = tf.io.encode_png(np.asarray(Image.open(_photo()).convert('RGB')))
  seed = tf.constant([0, 0])
  out = preprocess.parse(image_ops)({'image': encoded}, seed)['image'].numpy()
  crop = preprocess.parse(image_ops.rsplit('|', 1)[0])({'image': encoded}, seed)['image'].numpy()
  expected = (crop / 255.0 - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225])
  np.testing.assert_allclose(out, expected, atol=1e-5)
  assert -2.2 < out.min() < -1.5 and 2.0 < out.max() < 2.7  # not divided by 255 twice


def test_value_ops_refuse_an_already_mapped_image():
  ops = preprocess.parse('value_range(0, 1)|normalize')
  with pytest.raises(ValueError, match='pp op normalize reads uint8 pixels.*found float32'):
    ops({'image': tf.zeros((4, 4, 3), tf.uint8)}, tf.constant([0, 0]))


def test_with_statistics_keeps_the_geometry_and_takes_the_checkpoints_values():
  recipe = 'decode|resize_small(256)|central_crop(224)|value_range(-1, 1)|onehot'
  source = ("resize_small(256, method='bicubic', floor=True)|central_crop(224)|"
            "normalize((0.1, 0.2, 0.3), (0.4, 0.5, 0.6))")
  assert transforms.with_statistics(recipe, source) == (
      'decode|resize_small(256)|central_crop(224)|normalize((0.1, 0.2, 0.3), (0.4, 0.5, 0.6))|'
      'onehot')
  assert transforms.statistics(transforms.with_statistics(recipe, source)) == (
      (0.1, 0.2, 0.3), (0.4, 0.5, 0.6))


def test_eval_mode_feeds_a_foreign_checkpoint_its_own_statistics(tmp_path, digits_data_dir):
  """--mode=eval of a Hugging Face classifier trained on ImageNet statistics: the recipe's
  value_range is replaced by the checkpoint's normalize; the loss equals a hand computation on
  normalised digits."""
  config_hf = transformers.ViTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
                                     intermediate_size=64, image_size=16, patch_size=4,
                                     num_labels=10)
  _randomize(transformers.ViTForImageClassification(config_hf)).save_pretrained(tmp_path)
  mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
  transformers.ViTImageProcessor(size={'height': 16, 'width': 16}, image_mean=mean,
                                 image_std=std).save_pretrained(tmp_path)
  config = tiny_recipe.get_config(digits_data_dir)
  result = evaluators.evaluate_checkpoint(options_lib.read_evals(config), str(tmp_path))

  loaded = trained_model.load(str(tmp_path))
  source = sources.digits_source('test[:50]', image_size=16, data_dir=digits_data_dir)
  pp = preprocess.parse('decode|resize(16)|normalize((0.485, 0.456, 0.406), '
                        '(0.229, 0.224, 0.225))')
  examples = [source.lookup(i) for i in range(source.num_examples)]
  images = np.stack([pp(ex, tf.constant([0, 0]))['image'].numpy() for ex in examples])
  labels = np.array([int(ex['label']) for ex in examples])
  logits = np.asarray(loaded.model.apply({'params': loaded.params}, images, train=False),
                      np.float64)
  log_probs = logits - np.log(np.exp(logits - logits.max(1, keepdims=True)).sum(1,
                                                                                keepdims=True)) \
      - logits.max(1, keepdims=True)
  expected_loss = -np.mean(log_probs[np.arange(len(labels)), labels])
  assert result['eval/loss'] == pytest.approx(expected_loss, rel=1e-4)
  assert result['eval/accuracy'] == pytest.approx(np.mean(logits.argmax(1) == labels))


def test_fine_tuning_takes_the_source_statistics_and_resumes(tmp_path, digits_data_dir):
  """init_from a DINOv2 directory with ImageNet statistics: the recipe's default
  value_range(-1, 1) strings (train, device, eval) become the source's normalize, the saved
  config says so, and a second start finds the same config without the source."""
  source = tmp_path / 'dinov2'
  _randomize(transformers.Dinov2Model(transformers.Dinov2Config(
      hidden_size=16, num_hidden_layers=1, num_attention_heads=2, mlp_ratio=2, image_size=16,
      patch_size=4))).save_pretrained(source)
  transformers.BitImageProcessor(size={'shortest_edge': 18}, crop_size=16,
                                 image_mean=[0.485, 0.456, 0.406],
                                 image_std=[0.229, 0.224, 0.225]).save_pretrained(source)

  def config():
    c = tiny_recipe.get_config(digits_data_dir)
    c.model.update(activation='gelu', layer_norm_eps=1e-6, layerscale=1.0)
    c.init_from, c.total_steps, c.checkpoint_every, c.evals.eval.every = str(source), 2, 2, 0
    return c
  workdir = str(tmp_path / 'run')
  loop.train_and_evaluate(config(), workdir)
  saved = json.load(open(os.path.join(workdir, 'config.json')))
  normalize = 'normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))'
  assert saved['pp_device'] == f'randaug(2, 5)|{normalize}'
  eval_pp = saved['evals']['eval']['pp']
  assert normalize in eval_pp and 'value_range' not in eval_pp
  assert trained_model.load(workdir).pp == f'resize(16)|{normalize}'

  # The source is gone: a second start of the same config rebuilds the same pp strings from the
  # workdir's own record (the claim compares configs: a different pp would be refused).
  shutil.rmtree(source)
  result = loop.train_and_evaluate(config(), workdir)
  assert result['step'] == 2


def _photos() -> list[str]:
  # its photographs' paths.
  from sklearn import datasets  # pylint: disable=g-import-not-at-top
  folder = os.path.join(os.path.dirname(datasets.__file__), 'images')
  return [os.path.join(folder, name) for name in ('china.jpg', 'flower.jpg')]


def test_a_siglip2_directory_with_its_processor_predicts_as_transformers(tmp_path):
  """A `Siglip2VisionModel` saved with its own `Siglip2ImageProcessor` (max_num_patches,
  patch_size): the processor becomes our `naflex(16, 64)|value_range(-1, 1)`, its budget is
  infer's default, and on real photographs (4:3, cropped to other aspect ratios) our pixels
  and pooled features equal the processor's and the model's."""
  config = transformers.Siglip2VisionConfig(
      hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
      patch_size=16, num_patches=64, num_channels=3)
  model = _randomize(transformers.Siglip2VisionModel(config)).eval()
  model.save_pretrained(tmp_path)
  processor = transformers.Siglip2ImageProcessor(max_num_patches=64, patch_size=16)
  processor.save_pretrained(tmp_path)
  loaded = trained_model.load(str(tmp_path))
  assert loaded.pp == 'naflex(16, 64)|value_range(-1, 1)'
  assert transforms.naflex_budget(loaded.pp) == 64
  paths = []
  for index, path in enumerate(_photos()):  # 427x640, and crops of 1:3 and 2:1
    image = Image.open(path).convert('RGB')
    for box in ((0, 0, 640, 427), (100, 0, 240, 420), (0, 100, 600, 400)):
      paths.append(str(tmp_path / f'{index}_{box[2]}x{box[3]}.png'))
      image.crop(box).save(paths[-1])
  inputs = processor([Image.open(p).convert('RGB') for p in paths], return_tensors='pt')
  with torch.no_grad():
    theirs = model(**inputs).pooler_output.numpy()
  seqs = naflex.image_files(paths, 'value_range(-1, 1)', 16, 64)
  mask = inputs['pixel_attention_mask'].numpy().astype(bool)
  ours_pixels = np.asarray(seqs.patches)
  assert ours_pixels.shape[:2] == mask.shape
  np.testing.assert_array_equal(np.asarray(seqs.segments) > 0, mask)
  difference = np.abs(ours_pixels[mask] - inputs['pixel_values'].numpy()[mask])
  assert difference.mean() < 0.01 and np.quantile(difference, 0.99) < 0.05
  ours = np.asarray(vit.representations(loaded.model, loaded.params, seqs)['pooled'])[:, 0]
  np.testing.assert_allclose(ours, theirs, atol=0.02 * np.abs(theirs).max())
  predictions = infer.run(checkpoint_path=str(tmp_path), image_paths=paths, top_k=3)
  assert [p.classes for p in predictions] == np.argsort(-theirs, axis=1)[:, :3].tolist()
