"""Dense tasks: aligned augmentation, the losses and metrics against NumPy, sliding windows, the
refusals, and probes and fine-tuning on the embedded digit canvases end to end."""

import io

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image
import pytest
import tensorflow as tf

from vit_jax import errors
from vit_jax.configs import common
from vit_jax.data import dense_targets
from vit_jax.data import preprocess
from vit_jax.data import sources
from vit_jax.evaluators import dense as dense_eval
from vit_jax.models import dense as dense_lib
from vit_jax.models import intermediates
from vit_jax.models import vit
from vit_jax.objectives import dense as dense_objective
from vit_jax.train import options
from vit_jax.weights import trained_model

import configs.dense as dense_recipes
from support import tiny_vit_config


def _pattern(seed=0, size=(36, 44)):
  """(image uint8 [h, w, 3], labels int32 [h, w], depth float32 [h, w]): blocks of labels 1..12
  and 255, the image's value a function of the label (0 for 255, as padding is)."""
  rng = np.random.default_rng(seed)
  blocks = rng.integers(1, 14, (size[0] // 4 + 1, size[1] // 4 + 1))
  blocks[blocks == 13] = 255
  labels = np.kron(blocks, np.ones((4, 4), np.int64))[:size[0], :size[1]]
  labels[rng.random(size) < 0.05] = 7  # single pixels too
  return labels


def _encode(labels):
  return np.where(labels == 255, 0, labels * 20)


@pytest.mark.parametrize('seed', range(4))
def test_augmentation_keeps_every_pixel_of_image_and_targets_aligned(seed):
  labels = _pattern(seed)
  image = np.repeat(_encode(labels)[..., None], 3, axis=2).astype(np.uint8)
  example = {'image': tf.constant(image), 'segmentation': tf.constant(labels, tf.int32),
             'depth': tf.constant(np.where(labels == 255, 0, labels).astype(np.float32))}
  pp = preprocess.parse(
      'resize((40, 52), method="nearest")|random_scale(30, 60, 0.5, 2.0, method="nearest")|'
      'pad_to(48)|random_crop(48)|flip_lr|central_crop(40)|'
      'inception_crop(32, area_min=30, method="nearest")|resize_small(24, method="nearest")')
  out = pp(example, tf.constant([seed, 7], tf.int64))
  got_image = out['image'].numpy()[..., 0]
  segmentation, depth = out['segmentation'].numpy(), out['depth'].numpy()
  assert got_image.shape == segmentation.shape == depth.shape and min(got_image.shape) == 24
  np.testing.assert_array_equal(got_image, _encode(segmentation))
  np.testing.assert_array_equal(depth, np.where(segmentation == 255, 0, segmentation))
  assert len(np.unique(segmentation)) > 3  # a real pattern survived, not one flat block


def test_flip_and_crop_move_image_and_labels_together():
  labels = _pattern(3, (16, 16))
  image = np.repeat(_encode(labels)[..., None], 3, axis=2).astype(np.uint8)
  example = {'image': tf.constant(image), 'segmentation': tf.constant(labels, tf.int32)}
  flips = [preprocess.parse('flip_lr')(example, tf.constant([s, 0], tf.int64))
           for s in range(8)]
  mirrored = [f for f in flips if not np.array_equal(f['segmentation'].numpy(), labels)]
  assert 0 < len(mirrored) < 8
  np.testing.assert_array_equal(mirrored[0]['segmentation'].numpy(), labels[:, ::-1])
  np.testing.assert_array_equal(mirrored[0]['image'].numpy()[..., 0], _encode(labels[:, ::-1]))


def test_image_only_ops_refuse_examples_with_dense_targets():
  example = {'image': tf.zeros([8, 8, 3], tf.uint8), 'segmentation': tf.zeros([8, 8], tf.int32)}
  for spec in ('randaug(2, 10)', 'naflex(4, 16)'):
    with pytest.raises(errors.UserError, match='moves pixels of the image only'):
      preprocess.parse(spec)(example, tf.constant([0, 0], tf.int64))


def _png(array):
  buffer = io.BytesIO()
  Image.fromarray(array).save(buffer, format='PNG')
  return buffer.getvalue()


def test_segmentation_op_reads_pngs_and_reduces_the_zero_label():
  annotation = np.array([[0, 1, 2], [150, 255, 3]], np.uint8)
  rgb = np.repeat(annotation[..., None], 3, axis=2)  # tfds scene_parse150: class in channel 0
  out = preprocess.parse('segmentation(key="annotation", reduce_zero_label=True)',
                         num_classes=150)({'annotation': tf.constant(_png(rgb))},
                                                         tf.constant([0, 0], tf.int64))
  np.testing.assert_array_equal(out['segmentation'].numpy(), [[255, 0, 1], [149, 255, 2]])
  assert 'annotation' not in out


def _source(examples):
  """A Source over in-memory examples (dicts of numpy arrays)."""
  def lookup(index):
    return {k: tf.gather(tf.constant(np.stack([e[k] for e in examples])), index)
            for k in examples[0]}
  return sources.Source(name='memory', num_examples=len(examples), class_names=[],
                        lookup=lookup)


def test_bad_targets_are_refused_at_startup_in_one_line():
  image = np.zeros((8, 8, 3), np.uint8)
  seg = preprocess.parse('segmentation|value_range(-1, 1)', num_classes=5)
  wrong_size = _source([{'image': image, 'segmentation': np.zeros((8, 6, 1), np.uint8)}])
  with pytest.raises(errors.UserError, match=r'memory example 0 .*the segmentation map is '
                                             r'\(8, 6\) but its image is \(8, 8\)'):
    dense_targets.check(wrong_size, seg, 'segmentation', field='config.pp_train')
  flipped = preprocess.parse('segmentation|flip_lr|value_range(-1, 1)', num_classes=5)
  with pytest.raises(errors.UserError, match='differ in size'):
    dense_targets.check(wrong_size, flipped, 'segmentation', field='config.pp_train')
  bad_ids = _source([{'image': image, 'segmentation': np.full((8, 8, 1), 7, np.uint8)}])
  with pytest.raises(errors.UserError, match=r'class ids outside \[0, 5\) other than the ignore'):
    dense_targets.check(bad_ids, seg, 'segmentation', field='config.pp_train')
  ignored = _source([{'image': image, 'segmentation': np.full((8, 8, 1), 255, np.uint8)}])
  dense_targets.check(ignored, seg, 'segmentation', field='config.pp_train')  # fine
  unmeasured = _source([{'image': image, 'depth': np.zeros((8, 8), np.float32)}] * 2)
  with pytest.raises(errors.UserError, match=r'no depth pixel in \(0.001, 10.0\]'):
    dense_targets.check(unmeasured, preprocess.parse('depth|value_range(-1, 1)'), 'depth',
                        field='config.pp_train', depth_range=(1e-3, 10.0))


def test_the_ignore_label_counts_in_neither_loss_nor_metrics(rng):
  labels = rng.integers(0, 4, (2, 6, 6))
  labels[:, :2] = 255
  logits = rng.normal(size=(2, 6, 6, 4)).astype(np.float32)
  other = logits.copy()
  other[:, :2] = rng.normal(size=(2, 2, 6, 4)) * 10  # only where the label is ignored
  for a, b in zip(dense_objective.segmentation_loss(logits, labels, 255),
                  dense_objective.segmentation_loss(other, labels, 255)):
    np.testing.assert_allclose(a, b, rtol=1e-6)
  kept = labels[:, 2:]
  log_probs = jax.nn.log_softmax(logits[:, 2:])
  expected = -np.mean(np.take_along_axis(np.asarray(log_probs), kept[..., None], -1))
  np.testing.assert_allclose(dense_objective.segmentation_loss(logits, labels, 255)[0], expected,
                             rtol=1e-5)
  confusion = dense_eval.confusion_matrix(jnp.argmax(other, -1), labels, 4, 255,
                                          jnp.ones(2))
  assert float(confusion.sum()) == kept.size


def test_miou_equals_numpy_on_a_confusion_matrix_with_absent_classes(rng):
  classes = 6
  labels = rng.integers(0, 4, (3, 10, 12))  # classes 4 and 5 never labelled
  pred = np.where(rng.random(labels.shape) < 0.7, labels, rng.integers(0, 5, labels.shape))
  labels[0, :3] = 255
  weights = np.array([1.0, 1.0, 0.0])  # the third example is padding
  confusion = np.asarray(dense_eval.confusion_matrix(pred, labels, classes, 255, weights))
  keep = (labels[:2] != 255)
  expected = np.bincount(labels[:2][keep] * classes + pred[:2][keep],
                         minlength=classes * classes).reshape(classes, classes)
  np.testing.assert_array_equal(confusion, expected)
  metrics = dense_eval.segmentation_metrics(confusion)
  ious = []
  for c in range(classes):
    tp = np.sum((labels[:2] == c) & (pred[:2] == c) & keep)
    union = np.sum(((labels[:2] == c) | (pred[:2] == c)) & keep)
    ious.append(tp / union if union else np.nan)
  assert np.isnan(ious[5]) and ious[4] == 0.0  # 4: predicted, never labelled; 5: neither
  np.testing.assert_allclose(metrics['iou'], ious)
  np.testing.assert_allclose(metrics['miou'], np.nanmean(ious))
  np.testing.assert_allclose(metrics['pixel_accuracy'],
                             np.mean(pred[:2][keep] == labels[:2][keep]))


def test_depth_metrics_and_losses_equal_their_formulas(rng):
  depth = rng.uniform(0.5, 8, (2, 5, 7)).astype(np.float32)
  depth[0, 0] = 0.0  # unmeasured
  pred = (depth * rng.uniform(0.8, 1.3, depth.shape) + 0.1).astype(np.float32)
  valid = dense_lib.depth_valid(depth, 1e-3, 10.0)
  sums = dense_eval.depth_sums(pred, depth, valid, jnp.ones(2))
  rmse = [np.sqrt(np.mean((pred[i] - depth[i])[np.asarray(valid[i])] ** 2)) for i in range(2)]
  ratio = [np.maximum(pred[i] / depth[i], depth[i] / pred[i])[np.asarray(valid[i])]
           for i in range(2)]
  np.testing.assert_allclose(sums['rmse'], sum(rmse), rtol=1e-5)
  np.testing.assert_allclose(sums['delta1'], sum(np.mean(r < 1.25) for r in ratio), rtol=1e-5)
  assert float(sums['images']) == 2
  g = np.log(pred[np.asarray(valid)]) - np.log(depth[np.asarray(valid)])
  losses = dense_objective.depth_losses(pred, depth, valid)
  np.testing.assert_allclose(losses['silog'], np.sqrt(np.mean(g**2) - 0.85 * np.mean(g)**2),
                             rtol=1e-5)


def test_sliding_windows_equal_one_pass_of_a_pointwise_model():
  images = np.random.default_rng(1).normal(size=(2, 20, 30, 3)).astype(np.float32)
  pointwise = lambda x: jnp.tanh(x) * 2 + x[..., :1]  # pylint: disable=unnecessary-lambda-assignment
  np.testing.assert_allclose(dense_lib.slide(pointwise, images, (16, 16), (5, 7)),
                             pointwise(images), rtol=1e-6)
  assert dense_lib.windows(30, 16, 10) == [0, 10, 14]
  assert dense_lib.windows(16, 16, 10) == [0]


def test_a_hybrid_backbone_gives_its_grid_and_an_unrecoverable_grid_is_refused():
  backbone = vit.VisionTransformer(num_classes=None, **tiny_vit_config(
      resnet={'num_layers': (1,), 'width_factor': 1}, patches={'size': (1, 1)}))
  model = dense_objective.build_model(backbone, dense_objective.read_fields(
      common.get_config()), num_classes=5)
  images = np.zeros((1, 32, 32, 3), np.float32)
  params = model.init(jax.random.key(0), images, train=False)['params']
  assert model.apply({'params': params}, images, train=False).shape == (1, 32, 32, 5)
  with pytest.raises(errors.UserError, match='patch grid cannot be recovered'):
    intermediates.patch_maps(backbone, jnp.zeros((1, 17, 16)), (32, 32))


@pytest.mark.parametrize('fields, message', [
    (dict(pp_device='value_range(-1, 1)'), 'pp_device and mixup move or mix the image alone'),
    ({'dense.task': 'depth', 'dense.head': 'mask_transformer', 'num_classes': 1},
     'head=mask_transformer predicts class masks'),
    ({'dense.ignore_label': 3}, 'ignore_label=3 is a class id'),
    ({'dense.blocks': (9,)}, r'dense.blocks=\(9,\)'),
    ({'evals.val.kind': 'classification'}, "kind='classification'; a dense segmentation run"),
])
def test_bad_dense_configs_are_refused_in_one_line(fields, message):
  config = dense_recipes.get_config('digits_segmentation')
  for key, value in fields.items():
    holder = config
    *path, last = key.split('.')
    for part in path:
      holder = holder[part]
    holder[last] = value
  with pytest.raises(errors.UserError, match=message):
    options.read(config)


def test_a_hugging_face_dinov2_backbone_feeds_the_head_its_own_patch_features(tmp_path):
  """DINOv2 saved by transformers: the dense model's features are transformers' final-normed
  patch tokens, laid out as the image's grid."""
  # PyTorch: imported only by the tests that build a reference.
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  config = transformers.Dinov2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                     intermediate_size=64, image_size=28, patch_size=14)
  reference = transformers.Dinov2Model(config).eval()
  reference.save_pretrained(str(tmp_path))
  loaded = trained_model.load(str(tmp_path))
  model = dense_objective.build_model(loaded.model, dense_objective.read_fields(
      common.get_config()), num_classes=4)
  images = np.random.default_rng(0).normal(size=(2, 28, 28, 3)).astype(np.float32)
  head = model.init(jax.random.key(0), images, train=False)['params']['dense_head']
  params = {**loaded.params, 'dense_head': head}
  (maps,) = model.apply({'params': params}, images, False, method=model.features)
  with torch.no_grad():
    hidden = reference(torch.from_numpy(images.transpose(0, 3, 1, 2).copy())).last_hidden_state
  theirs = hidden.numpy()[:, 1:].reshape(2, 2, 2, 32)
  np.testing.assert_allclose(maps, theirs, rtol=2e-4, atol=2e-4)
  # A wider image through windows of the native size (slide), one class map per pixel.
  wide = np.random.default_rng(1).normal(size=(1, 28, 42, 3)).astype(np.float32)
  logits = dense_lib.slide(lambda x: model.apply({'params': params}, x, train=False), wide,
                           (28, 28), (14, 14))
  assert logits.shape == (1, 28, 42, 4) and np.all(np.isfinite(logits))
