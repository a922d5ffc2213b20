"""Preprocessing ops: values, shapes, determinism under seeds, and the spec parser."""

import io

import numpy as np
from PIL import Image
import pytest
import tensorflow as tf

from vit_jax.data import preprocess


def _jpeg(pixels, quality=95):
  buffer = io.BytesIO()
  Image.fromarray(pixels).save(buffer, format='JPEG', quality=quality)
  return buffer.getvalue()


def _image(h=60, w=80, seed=0):
  return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _run(spec, example, seed=(1, 2)):
  out = preprocess.parse(spec)({k: tf.constant(v) for k, v in example.items()},
                               tf.constant(seed, tf.int64))
  return {k: v.numpy() for k, v in out.items()}


def test_decode_and_value_range():
  pixels = _image()
  png = io.BytesIO()
  Image.fromarray(pixels).save(png, format='PNG')
  out = _run('decode|value_range(-1, 1)', {'image': png.getvalue(), 'label': 3})
  np.testing.assert_allclose(out['image'], pixels / 127.5 - 1, atol=1e-6)
  grey = _run('decode', {'image': pixels[..., 0]})['image']
  assert grey.shape == (60, 80, 3)


def test_normalize_and_onehot():
  out = _run('normalize|onehot(4)', {'image': np.full((2, 2, 3), 255, np.uint8), 'label': 2})
  np.testing.assert_allclose(out['image'][0, 0], (1 - np.array([0.485, 0.456, 0.406])) /
                             np.array([0.229, 0.224, 0.225]), rtol=1e-6)
  np.testing.assert_allclose(out['labels'], [0, 0, 1, 0])
  assert out['label'] == 2
  with pytest.raises(ValueError, match='onehot has no smoothing; label smoothing is '
                     'config.label_smoothing'):
    preprocess.parse('onehot(4, smoothing=0.2)')


def test_resize_small_and_central_crop():
  pixels = _image(60, 80)
  out = _run('resize_small(30)', {'image': pixels})['image']
  assert out.shape == (30, 40, 3)
  crop = _run('central_crop(20)', {'image': pixels})['image']
  np.testing.assert_array_equal(crop, pixels[20:40, 30:50])


def test_inception_crop_respects_area_and_size():
  pixels = np.zeros((100, 100, 3), np.uint8)
  pixels[:50] = 255  # top half white: the crop's mean tells where it came from
  means = []
  for seed in range(20):
    out = _run('inception_crop(32, area_min=20, area_max=40)', {'image': pixels}, (seed, 0))
    assert out['image'].shape == (32, 32, 3)
    means.append(out['image'].mean())
  assert len(set(np.round(means, 3))) > 5  # windows differ with the seed
  assert min(means) < 30 and max(means) > 200  # some windows fall (almost) wholly in one half


def test_fused_jpeg_crop_equals_decode_then_crop():
  data = _jpeg(_image(96, 128))
  for seed in ((0, 1), (5, 9)):
    fused = _run('decode_jpeg_and_inception_crop(40)', {'image': data}, seed)['image']
    # Same op position in the chain -> same seed -> same window; only the decoding differs.
    reference = _run('inception_crop(40)', {'image': tf.io.decode_jpeg(data).numpy()},
                     seed)['image']
    assert fused.shape == reference.shape == (40, 40, 3)
    np.testing.assert_allclose(fused, reference, atol=2)
  png = io.BytesIO()
  Image.fromarray(_image()).save(png, format='PNG')
  assert _run('decode_jpeg_and_inception_crop(16)', {'image': png.getvalue()})['image'].shape == (
      16, 16, 3)


def test_random_ops_are_functions_of_the_seed():
  pixels = _image()
  spec = 'inception_crop(24)|flip_lr|randaug(2, 10)'
  a = _run(spec, {'image': pixels}, (3, 4))['image']
  b = _run(spec, {'image': pixels}, (3, 4))['image']
  c = _run(spec, {'image': pixels}, (3, 5))['image']
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a, c)


def test_flip_lr_mirrors_half_the_time():
  pixels = _image(4, 6)
  flipped = [np.array_equal(_run('flip_lr', {'image': pixels}, (s, 0))['image'], pixels[:, ::-1])
             for s in range(200)]
  assert 70 < sum(flipped) < 130


def test_parser_errors():
  with pytest.raises(ValueError, match="Unknown preprocessing op 'blur'"):
    preprocess.parse('decode|blur(3)')
  with pytest.raises(ValueError, match='Bad arguments for preprocessing op'):
    preprocess.parse('resize(1, 2, 3, 4)')
  with pytest.raises(ValueError, match='must be literals'):
    preprocess.parse('resize(size)')
  with pytest.raises(ValueError, match="example has no \\['labels'\\]"):
    _run('keep("image", "labels")', {'image': _image()})
