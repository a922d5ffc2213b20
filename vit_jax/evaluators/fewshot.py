"""Few-shot linear probes (kind `fewshot`), the paper's protocol for watching pretraining.

Regularised least-squares regression from the frozen representation of k training images per
class to {-1, 1}^K targets, solved in closed form; top-1 on the test split. The default protocol
is the one behind the published numbers (big_vision's `fewshot_lsr`):

- for each seed in `seeds` (0, 1, 2), every class's training examples are permuted by
  `np.random.default_rng(seed)` (classes in label order) and the first k of each are the shots;
- features are standardised with the k-shot set's mean and std (+1e-5), the test features too;
- a constant bias feature of 100 (so the bias is almost unregularised), a fixed L2 of `l2_reg`
  (2^10);
- `<dataset>_<k>shot-seed-<s>` per seed, and `<dataset>_<k>shot` their mean.

Only the examples some seed draws are passed through the model (the draws depend on labels
alone). `protocol='selected_l2'` is our variant, with its own metric names: one draw per
(seed, dataset), the L2 picked from `l2_regs` on `holdout_per_class` further training examples
per class, raw features with a bias of 1: `<dataset>_<k>shot_selected` and
`<dataset>_<k>shot_selected_l2`.

The solve runs in float64 on the host, from one eigendecomposition of the smaller Gram matrix
(`X Xᵀ` or `Xᵀ X`) that serves every L2 value.
"""

import zlib
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import tensorflow as tf

from vit_jax import errors
from vit_jax.data import pipeline
from vit_jax.data import preprocess
from vit_jax.data import sources
from vit_jax.evaluators import base
from vit_jax.evaluators import eval_step as step_lib
from vit_jax.models import sequences
from vit_jax.models import vit

BIAS_CONSTANT = 100.0  # big_vision's: a large constant feature leaves the bias almost free
PROTOCOLS = ('fixed_l2', 'selected_l2')
DATASET_FIELDS = ('name', 'train_split', 'test_split', 'data_dir', 'image_size', 'root',
                  'image_key', 'label_key', 'prepare', 'strict')


def ridge_predictions(train_x: np.ndarray, train_labels: np.ndarray, eval_x: np.ndarray,
                      num_classes: int, l2_regs: Sequence[float],
                      bias: float = 1.0) -> np.ndarray:
  """[len(l2_regs), len(eval_x)] predicted classes of the closed-form ridge regression (with a
  constant `bias` column) from `train_x` to {-1, 1} one-hot targets, for every L2 value."""
  x = np.concatenate([train_x, np.full((len(train_x), 1), bias)], 1).astype(np.float64)
  e = np.concatenate([eval_x, np.full((len(eval_x), 1), bias)], 1).astype(np.float64)
  y = 2.0 * np.eye(num_classes)[train_labels] - 1.0
  if x.shape[0] <= x.shape[1]:  # W = Xᵀ (X Xᵀ + λI)⁻¹ Y, with X Xᵀ = U S Uᵀ
    s, u = np.linalg.eigh(x @ x.T)
    left, right = e @ x.T @ u, u.T @ y
  else:  # W = (Xᵀ X + λI)⁻¹ Xᵀ Y, with Xᵀ X = V S Vᵀ
    s, u = np.linalg.eigh(x.T @ x)
    left, right = e @ u, u.T @ (x.T @ y)
  s = np.maximum(s, 0.0)
  return np.stack([np.argmax(left @ (right / (s + l2)[:, None]), -1) for l2 in l2_regs])


def standardized_predictions(train_x: np.ndarray, train_labels: np.ndarray,
                             eval_x: np.ndarray, num_classes: int, l2_reg: float) -> np.ndarray:
  """Predicted classes of the published probe: features standardised with the shots' mean and
  std (+1e-5), a bias feature of 100, the fixed L2."""
  train_x, eval_x = np.asarray(train_x, np.float64), np.asarray(eval_x, np.float64)
  mean, std = train_x.mean(0, keepdims=True), train_x.std(0, keepdims=True) + 1e-5
  return ridge_predictions((train_x - mean) / std, train_labels, (eval_x - mean) / std,
                           num_classes, (l2_reg,), bias=BIAS_CONSTANT)[0]


def seeded_draws(labels: np.ndarray, num_classes: int, seed: int,
                 max_shots: int) -> list[np.ndarray]:
  """Per class, the first `max_shots` of its training indices permuted by one generator seeded
  with `seed`, classes in label order (big_vision's draw); the k-shot set is each one's first k
  (a class with fewer examples gives what it has)."""
  rng = np.random.default_rng(seed)
  return [rng.permutation(np.flatnonzero(labels == c))[:max_shots] for c in range(num_classes)]


def select_shots(labels: np.ndarray, class_names: Sequence[str], *, shots: int, holdout: int,
                 seed: int, dataset: str) -> tuple[np.ndarray, np.ndarray]:
  """(pool [classes, shots], held out [classes * holdout]) example indices, drawn per class
  from a generator seeded with (seed, dataset): the same every time."""
  rng = np.random.default_rng([seed, zlib.crc32(dataset.encode())])
  pool, held = [], []
  for c, class_name in enumerate(class_names):
    members = np.flatnonzero(labels == c)
    if len(members) < shots + holdout:
      raise errors.UserError(
          f'class {class_name!r} (label {c}) has {len(members)} training examples; '
          f'{shots} shots + {holdout} held out per class need {shots + holdout}.')
    members = rng.permutation(members)
    pool.append(members[:shots])
    held.append(members[shots:shots + holdout])
  return np.stack(pool), np.concatenate(held)


def _with_index(source: sources.Source, indices=None) -> sources.Source:
  """`source` (or its examples at `indices`), each example carrying its position as `index`."""
  table = None if indices is None else tf.constant(np.asarray(indices, np.int64))

  def lookup(i):
    example = source.lookup(i if table is None else tf.gather(table, i))
    return {**example, 'index': tf.cast(i, tf.int32)}

  count = source.num_examples if indices is None else len(indices)
  return sources.Source(name=source.name, num_examples=count, class_names=source.class_names,
                        lookup=lookup)


def _labels(source: sources.Source) -> np.ndarray:
  dataset = tf.data.Dataset.range(source.num_examples).map(
      pipeline.as_written(lambda i: source.lookup(i)['label']),
      num_parallel_calls=tf.data.AUTOTUNE).batch(1024)
  return np.concatenate([np.asarray(b) for b in dataset.as_numpy_iterator()] or [np.zeros(0)])


class FewShot(base.Evaluator):
  """Few-shot probes on each of `datasets` (see the module docstring for the metric names).

  Fields: `datasets` ({short name: {name, train_split, test_split, and source fields such as
  data_dir, image_size, root}}), `pp` (image preprocessing with fixed output size, no labels
  needed), `shots`, `protocol` ('fixed_l2', the published one, or 'selected_l2'), `l2_reg` and
  `seeds` for the first, `l2_regs`, `holdout_per_class` and `seed` for the second,
  `representation` ('pre_logits' or 'pooled': see `vit.REPRESENTATIONS`). Every field is
  required; `vit_jax.configs.common.fewshot_eval` writes an entry with big_vision's defaults.
  """

  FIELDS = ('datasets', 'pp', 'shots', 'protocol', 'l2_reg', 'seeds', 'l2_regs',
            'holdout_per_class', 'seed', 'representation')

  def __init__(self, name: str, entry: Mapping[str, Any], context: base.Context, run_loss=None):
    del run_loss
    super().__init__(name, entry, context)
    missing = [field for field in self.FIELDS if entry.get(field) is None]
    if missing:
      raise errors.UserError(
          f'config.evals.{name} has no {", ".join(missing)}; write the entry with '
          'vit_jax.configs.common.fewshot_eval(...), which sets every field.')
    self.shots = tuple(int(k) for k in entry['shots'])
    if not self.shots or min(self.shots) < 1:
      raise errors.UserError(f'config.evals.{name}.shots must be positive integers, found '
                             f'{self.shots}.')
    self.protocol = entry['protocol']
    if self.protocol not in PROTOCOLS:
      raise errors.UserError(f'config.evals.{name}.protocol must be one of {PROTOCOLS}, found '
                             f'{self.protocol!r}.')
    self.l2_reg = float(entry['l2_reg'])
    self.seeds = tuple(int(v) for v in entry['seeds'])
    self.l2_regs = tuple(float(v) for v in entry['l2_regs'])
    if self.l2_reg <= 0 or not self.l2_regs or min(self.l2_regs) <= 0:
      raise errors.UserError(f'config.evals.{name}: l2_reg and l2_regs must be positive, found '
                             f'{self.l2_reg} and {self.l2_regs}.')
    self.holdout = int(entry['holdout_per_class'])
    if self.protocol == 'selected_l2' and self.holdout < 1:
      raise errors.UserError(
          f'config.evals.{name}.holdout_per_class must be >= 1 (the L2 is chosen '
          f'on those examples), found {self.holdout}.')
    seed = int(entry['seed'])
    self.representation = entry['representation']
    if not entry.get('pp'):
      raise errors.UserError(f'config.evals.{name}.pp: expected an image preprocessing string, '
                             f'found {entry.get("pp")!r}.')
    with errors.context(f'config.evals.{name}.pp'):
      image_pp = preprocess.parse(entry['pp'], num_classes=context.num_classes)
    def pp(example, seed):  # the image, or the one-image NaFlex sequence of the naflex op
      processed = image_pp(example, seed)
      inputs = ({'image': processed['image']} if 'image' in processed else
                {key: processed[key] for key in sequences.KEYS})
      return {**inputs, 'label': example['label'], 'index': example['index']}
    self._pp = pp
    datasets = base.as_dict(entry.get('datasets') or {})
    if not datasets:
      raise errors.UserError(
          f'config.evals.{name}.datasets: expected at least one dataset, found none.')
    self._local_batch = context.local_batch(self.batch_size)
    self._tasks = {}
    for short, data in datasets.items():
      self._tasks[short] = self._task(short, base.as_dict(data), seed)
    self._step = step_lib.jit_eval_step(self._features_step(), context.mesh,
                                        context.param_shardings)
    self._check_representation()

  def _task(self, short: str, data: dict, seed: int) -> dict:
    field = f'datasets.{short}'
    for key in data:
      if key not in DATASET_FIELDS:
        raise errors.UserError(f'config.evals.{self.name}.{field} has no field {key!r}; fields: '
                               f'{", ".join(DATASET_FIELDS)}.')
    for key in ('name', 'train_split', 'test_split'):
      if not data.get(key):
        raise errors.UserError(f'config.evals.{self.name}.{field}.{key}: expected a value, found '
                               f'{data.get(key)!r}.')
    common = {k: v for k, v in data.items() if k not in ('train_split', 'test_split')}
    train = base.source(self.name, field, {**common, 'split': data['train_split']})
    test = base.source(self.name, field, {**common, 'split': data['test_split']})
    labels = _labels(train)
    task = {'test': _with_index(test), 'num_classes': train.num_classes}
    if self.protocol == 'fixed_l2':
      counts = np.bincount(labels.astype(np.int64), minlength=train.num_classes)
      short_class = int(np.argmax(counts < max(self.shots)))  # the first class short of shots
      if counts[short_class] < max(self.shots):
        raise errors.UserError(
            f'config.evals.{self.name}.{field} ({train.name}): class '
            f'{train.class_names[short_class]!r} (label {short_class}) has '
            f'{counts[short_class]} training examples; {max(self.shots)} shots need '
            f'{max(self.shots)}.')
      draws = {s: seeded_draws(labels, train.num_classes, s, max(self.shots))
               for s in self.seeds}
      chosen = np.unique(np.concatenate([i for d in draws.values() for i in d]))
      task.update(draws=draws, chosen=chosen)
    else:
      with errors.context(f'config.evals.{self.name}.{field} ({train.name})'):
        pool, held = select_shots(labels, train.class_names, shots=max(self.shots),
                                  holdout=self.holdout, seed=seed, dataset=short)
      chosen = np.concatenate([pool.reshape(-1), held])
      task.update(pool=pool)
    task['train'] = _with_index(train, chosen)
    return task

  def _features_step(self):
    model, representation = self.context.model, self.representation

    def features(params, batch):
      if 'image' in batch:
        found = vit.representations(model, params, batch['image'])[representation]
      else:  # one-image sequences: [b, 1, d]
        found = vit.representations(model, params, sequences.from_batch(batch))[representation]
        found = found[:, 0]
      return {'features': found, 'label': batch['label'], 'index': batch['index'],
              'mask': batch['mask']}
    return features

  def _check_representation(self):
    task = next(iter(self._tasks.values()))
    dataset, _ = pipeline.eval_dataset(task['test'], self._pp, local_batch=1)
    if 'image' not in dataset.element_spec:  # NaFlex: both outputs are [b, 1, d]
      if self.representation not in ('pooled', 'pre_logits'):
        raise errors.UserError(f'config.evals.{self.name}.representation: expected pooled or '
                               f'pre_logits, found {self.representation!r}.')
      return
    image = dataset.element_spec['image']

    def shapes(images):
      params = self.context.model.init(jax.random.key(0), images, train=False)['params']
      return vit.representations(self.context.model, params, images)
    found = jax.eval_shape(shapes, jax.ShapeDtypeStruct(image.shape, jnp.float32))
    if self.representation not in found:
      raise errors.UserError(f'config.evals.{self.name}.representation: the model has no output '
                             f'{self.representation!r}; it has {sorted(found)}.')
    if len(found[self.representation].shape) != 2:
      raise errors.UserError(
          f'config.evals.{self.name}.representation: {self.representation!r} has '
          f'shape {found[self.representation].shape}; a probe needs one vector '
          'per image (a pooled classifier).')

  def _features(self, params, source: sources.Source) -> tuple[np.ndarray, np.ndarray]:
    """(features, labels) of every example of `source`, in index order."""
    parts = []
    for batch in base.batches(source, self._pp, self._local_batch, self.context.mesh):
      parts.append(jax.device_get(self._step(params, batch)))
    out = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    keep = out['mask'] > 0
    order = np.argsort(out['index'][keep], kind='stable')
    return out['features'][keep][order], out['label'][keep][order]

  def run(self, params: Any, step: int) -> dict[str, float]:
    del step
    result = {}
    for short, task in self._tasks.items():
      train_x, train_y = self._features(params, task['train'])
      test_x, test_y = self._features(params, task['test'])
      prefix = f'{self.name}/{short}'
      if self.protocol == 'selected_l2':
        result.update(probe(train_x, train_y, test_x, test_y, task['pool'].shape,
                            num_classes=task['num_classes'], shots=self.shots,
                            l2_regs=self.l2_regs, prefix=prefix))
        continue
      for k in self.shots:
        accuracies = []
        for seed, draw in task['draws'].items():
          rows = np.searchsorted(task['chosen'], np.concatenate([d[:k] for d in draw]))
          predictions = standardized_predictions(train_x[rows], train_y[rows], test_x,
                                                 task['num_classes'], self.l2_reg)
          accuracies.append(float(np.mean(predictions == test_y)))
          result[f'{prefix}_{k}shot-seed-{seed}'] = accuracies[-1]
        result[f'{prefix}_{k}shot'] = float(np.mean(accuracies))
    return result

  def summary(self, metrics: Mapping[str, float]) -> str:
    parts = []
    suffix = '_selected' if self.protocol == 'selected_l2' else ''
    for short in self._tasks:
      accs = '/'.join(f'{metrics[f"{self.name}/{short}_{k}shot{suffix}"]:.3f}'
                      for k in self.shots)
      parts.append(f'{short} {"/".join(map(str, self.shots))}-shot {accs}')
    return f'{self.name} ' + ', '.join(parts)


def probe(train_x, train_y, test_x, test_y, pool_shape, *, num_classes, shots, l2_regs,
          prefix) -> dict[str, float]:
  """Accuracies of the `selected_l2` probes on the test split. `train_x` holds the pool (class-major,
  `pool_shape` = [classes, max shots]) followed by the held-out examples."""
  classes, max_shots = pool_shape
  pool_x = train_x[:classes * max_shots].reshape(classes, max_shots, -1)
  pool_y = train_y[:classes * max_shots].reshape(classes, max_shots)
  held_x, held_y = train_x[classes * max_shots:], train_y[classes * max_shots:]
  eval_x = np.concatenate([held_x, test_x])
  result = {}
  for k in shots:
    x, y = pool_x[:, :k].reshape(classes * k, -1), pool_y[:, :k].reshape(-1)
    predictions = ridge_predictions(x, y, eval_x, num_classes, l2_regs)
    held_acc = np.mean(predictions[:, :len(held_y)] == held_y, axis=1)
    best = int(np.argmax(held_acc))
    result[f'{prefix}_{k}shot_selected'] = float(
        np.mean(predictions[best, len(held_y):] == test_y))
    result[f'{prefix}_{k}shot_selected_l2'] = float(l2_regs[best])
  return result
