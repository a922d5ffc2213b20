"""Top-1 on a whole split (kind `classification`), and ImageNet-ReaL (kind `real`).

Exact for any split size and device count: the last batch is padded, padding is masked, and the
masked sums are reduced over the mesh. ImageNet-v2 is `classification` on tfds `imagenet_v2`.
"""

from typing import Any, Mapping

import jax

from vit_jax import errors
from vit_jax.data import preprocess
from vit_jax.evaluators import base
from vit_jax.evaluators import eval_step as step_lib


class Classification(base.Evaluator):
  """`<name>/accuracy`, `<name>/loss`, `<name>/examples` of the model on `data` with `pp`.

  Fields: `data` (a data source: name, split, ...), `pp` (eval preprocessing, ending in
  `onehot|keep("image", "labels")`), `loss` (default: the run's).
  """

  FIELDS = ('data', 'pp', 'loss')
  MULTI_LABEL = False

  def __init__(self, name: str, entry: Mapping[str, Any], context: base.Context,
               run_loss: str = 'softmax_xent'):
    super().__init__(name, entry, context)
    self.source = base.source(name, 'data', entry.get('data'))
    if not entry.get('pp'):
      raise errors.UserError(
          f'config.evals.{name}.pp: expected an eval preprocessing string, found '
          f'{entry.get("pp")!r}.')
    with errors.context(f'config.evals.{name}.pp'):
      self._pp = preprocess.parse(entry['pp'], num_classes=context.num_classes)
    self._local_batch = context.local_batch(self.batch_size)
    eval_step = step_lib.make_eval_step(context.model, context.mesh,
                                        loss=entry.get('loss') or run_loss,
                                        multi_label=self.MULTI_LABEL)
    self._step = step_lib.jit_eval_step(eval_step, context.mesh, context.param_shardings)

  def run(self, params: Any, step: int) -> dict[str, float]:
    del step
    totals = None
    for batch in base.batches(self.source, self._pp, self._local_batch, self.context.mesh):
      sums = self._step(params, batch)
      totals = sums if totals is None else jax.tree.map(lambda a, b: a + b, totals, sums)
    totals = jax.device_get(totals)
    count = float(totals['count'])
    if count == 0:
      raise errors.UserError(
          f'config.evals.{self.name}: no labelled example in {self.source.name}.')
    result = {f'{self.name}/accuracy': float(totals['correct']) / count,
              f'{self.name}/examples': count}
    if 'loss_sum' in totals:
      result[f'{self.name}/loss'] = float(totals['loss_sum']) / count
    return result

  def summary(self, metrics: Mapping[str, float]) -> str:
    text = f'{self.name} accuracy {metrics[f"{self.name}/accuracy"]:.4f}'
    if f'{self.name}/loss' in metrics:
      text += f', loss {metrics[f"{self.name}/loss"]:.4f}'
    return text + f' on {int(metrics[f"{self.name}/examples"])} examples'


class Real(Classification):
  """ImageNet-ReaL: the top-1 prediction is correct when it is one of the image's ReaL labels;
  images without a ReaL label are left out (`<name>/examples` counts the rest).

  `data` defaults to tfds `imagenet2012_real`, split `validation`, labels `real_label`; `pp` must
  turn the label list into a multi-hot target (`onehot` does: a list gives the union).
  """

  MULTI_LABEL = True

  def __init__(self, name, entry, context, run_loss='softmax_xent'):
    data = dict(base.as_dict(entry.get('data') or {}))
    data.setdefault('name', 'imagenet2012_real')
    data.setdefault('split', 'validation')
    if data.get('label_key') in (None, '', 'label'):  # 'label' is the single-label default
      data['label_key'] = 'real_label'
    super().__init__(name, {**base.as_dict(entry), 'data': data}, context, run_loss)
