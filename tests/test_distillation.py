"""DeiT distillation on the digits: a teacher trained here, a student whose distillation head learns
it, the teacher's parameters sharded by fsdp, and the bad-input lines."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import tiny_recipe
from vit_jax import errors
from vit_jax.data import pipeline
from vit_jax.data import preprocess
from vit_jax.data import sources
from vit_jax.models import vit
from vit_jax.objectives import distillation
from vit_jax.train import loop
from vit_jax.train import setup as setup_lib
from vit_jax.weights import trained_model


def _config(data_dir, **fields):
  config = tiny_recipe.get_config(data_dir)
  config.update(dict(total_steps=60, log_every=20, checkpoint_every=60), **fields)
  config.pp_train = 'decode|resize(16)|onehot|keep("image", "labels")'  # learnt in tens of steps
  config.pp_device = 'value_range(-1, 1)'
  config.model.transformer.dropout_rate = 0.0
  config.evals.eval.every = 0
  return config


@pytest.fixture(scope='module')
def teacher(digits_data_dir, tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp('teacher') / 'run')
  loop.train_and_evaluate(_config(digits_data_dir, total_steps=30), workdir)  # a weak teacher
  return workdir


def _student(data_dir, teacher_dir, **fields):
  config = _config(data_dir, **fields)
  config.model.distilled = True
  if teacher_dir:
    config.objective = 'distillation'
    config.distill.teacher = teacher_dir
  return config


def _test_images(data_dir):
  source = sources.digits_source('test[:300]', data_dir=data_dir)
  dataset, _ = pipeline.eval_dataset(
      source, preprocess.parse('decode|resize(16)|value_range(-1, 1)|keep("image")'),
      local_batch=300)
  return next(dataset.as_numpy_iterator())['image']


def test_the_distillation_head_agrees_with_the_teacher_more_than_without(
    teacher, digits_data_dir, tmp_path):
  images = _test_images(digits_data_dir)
  taught = trained_model.load(teacher)
  teacher_top = np.argmax(taught.model.apply({'params': taught.params}, images, train=False), -1)

  def agreement(workdir, head):
    loaded = trained_model.load(workdir)
    _, heads = loaded.model.apply({'params': loaded.params}, images, train=False,
                                  mutable=[vit.HEADS])
    logits = heads[vit.HEADS]['logits'][0][head]
    return float(np.mean(np.argmax(logits, -1) == teacher_top))
  result = loop.train_and_evaluate(_student(digits_data_dir, teacher),
                                   str(tmp_path / 'distilled'))
  loop.train_and_evaluate(_student(digits_data_dir, None), str(tmp_path / 'plain'))
  assert 'eval/accuracy' in result
  distilled = agreement(str(tmp_path / 'distilled'), 1)  # the distillation head
  plain = agreement(str(tmp_path / 'plain'), 1)  # trained on the labels alone
  print(f'agreement with the teacher: distilled {distilled:.3f}, plain {plain:.3f}')
  assert distilled > plain + 0.05, (distilled, plain)


def test_a_teacher_under_fsdp_gives_the_loss_it_gives_on_one_device(teacher, digits_data_dir):
  def loss_and_sharding(mesh, preset, devices):
    config = _student(digits_data_dir, teacher, mesh=mesh, sharding=preset)
    setup = setup_lib.from_config(config)
    objective = setup.objective
    extras = objective.extras()  # numpy: one device
    if devices > 1:
      extras = jax.device_put(extras, objective.extras_shardings(setup.mesh, preset))
    rng = np.random.default_rng(0)
    inputs = {'image': rng.uniform(-1, 1, (16, 16, 16, 3)).astype(np.float32),
              'labels': np.eye(10, dtype=np.float32)[rng.integers(0, 10, 16)]}
    params = setup.model.init(jax.random.key(0), inputs['image'][:1], train=False)['params']
    params = jax.tree.map(lambda x: x + 0.01, params)  # non-zero heads
    loss, metrics = jax.jit(objective.loss)(params, inputs, jax.random.key(1), extras)
    kernel = extras['teacher']['Transformer']['encoderblock_0']['MlpBlock_0']['Dense_0']['kernel']
    return float(loss), float(metrics['teacher_agreement']), getattr(kernel, 'sharding', None)
  sharded = loss_and_sharding((1, 8, 1), 'fsdp', 8)
  single = loss_and_sharding((1, 8, 1), 'fsdp', 1)
  assert sharded[2].spec[0] == 'fsdp'  # the teacher's weights are split over the 8 devices
  assert len(sharded[2].device_set) == 8 and single[2] is None
  np.testing.assert_allclose(sharded[0], single[0], rtol=1e-5)
  assert sharded[1] == single[1]


def test_hard_and_soft_losses_are_deits():
  cls = jnp.array([[2.0, 0.0, -1.0]])
  dist = jnp.array([[0.5, 1.0, 0.0]])
  teacher = jnp.array([[0.0, 3.0, 1.0]])
  labels = jnp.array([[1.0, 0.0, 0.0]])
  ce = lambda logits, target: -jnp.sum(target * jax.nn.log_softmax(logits))  # pylint: disable=unnecessary-lambda-assignment

  class Fixed:  # logits of the two heads, as the student's sown HEADS give them
    def apply(self, variables, images, train, rngs, mutable):
      del variables, images, train, rngs, mutable
      return (cls + dist) / 2, {vit.HEADS: {'logits': ((cls, dist),)}}

  def loss(kind, tau=1.0):
    objective = distillation.Distillation.__new__(distillation.Distillation)
    objective.model, objective.loss_fn, objective.label_smoothing = Fixed(), None, 0.0
    objective.fields = distillation.Fields('t', kind, 0.5, tau)
    objective.loss_fn = lambda logits, target, smoothing: jnp.array([ce(logits, target)])
    objective.teacher_logits = lambda params, images: teacher
    return float(objective.loss(None, {'image': None, 'labels': labels}, None, {'teacher': 0})[0])
  hard = 0.5 * ce(cls, labels) + 0.5 * ce(dist, jnp.array([0.0, 1.0, 0.0]))
  np.testing.assert_allclose(loss('hard'), hard, rtol=1e-6)
  tau = 2.0
  p_t = jax.nn.softmax(teacher / tau)
  kl = jnp.sum(p_t * (jnp.log(p_t) - jax.nn.log_softmax(dist / tau))) * tau * tau / 3
  np.testing.assert_allclose(loss('soft', tau), 0.5 * ce(cls, labels) + 0.5 * kl, rtol=1e-6)


def test_the_teacher_input_is_mapped_to_its_statistics():
  scale, shift = distillation.input_map('value_range(-1, 1)',
                                        'normalize((0.5, 0.4, 0.3), (0.2, 0.25, 0.5))')
  pixels = np.array([0.0, 0.3, 1.0])  # in [0, 1]
  student = pixels * 2 - 1
  for channel, (mean, std) in enumerate(zip((0.5, 0.4, 0.3), (0.2, 0.25, 0.5))):
    np.testing.assert_allclose(student * scale[channel] + shift[channel],
                               (pixels - mean) / std, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize('change,message', [
    (dict(num_classes=7), 'predicts 10 classes but the student has 7'),
    (dict(teacher='missing'), 'Checkpoint not found: .*missing'),
    (dict(distilled=False), 'needs a student with a distillation token and head'),
    (dict(kind='medium'), "config.distill.kind='medium'; expected one of hard, soft"),
])
def test_bad_distillation_input_is_refused_before_the_claim(teacher, digits_data_dir, tmp_path,
                                                            change, message):
  config = _student(digits_data_dir, teacher)
  if 'num_classes' in change:
    config.num_classes = change['num_classes']
    config.data.name = 'digits'
  if 'teacher' in change:
    config.distill.teacher = str(tmp_path / change['teacher'])
  if 'distilled' in change:
    config.model.distilled = False
  if 'kind' in change:
    config.distill.kind = change['kind']
  with pytest.raises(errors.UserError, match=message):
    loop.train_and_evaluate(config, str(tmp_path / 'run'))
  assert not (tmp_path / 'run' / 'config.json').exists()

