"""The training loop, and only the loop: steps, agreed stops, checkpoints, evaluations, metrics.

Everything it runs is built elsewhere: `run.prepare` (state, input, step, evaluators, writers)
from `setup`, `checkpointer`, `preemption`, `workdir`, `metric_writer` and `progress`.
"""

from typing import Any

import jax
import ml_collections
import numpy as np

from vit_jax import errors
from vit_jax.parallel import partitioning
from vit_jax.train import preemption
from vit_jax.train import run as run_lib


def _check_finite(pending: list, fetched: list, last_saved: int) -> None:
  for (number, _), values in zip(pending, fetched):
    if values['finite'] != 1.0:
      raise errors.Diverged(
          f'Non-finite loss or gradient at step {number} (loss={values["loss"]}, '
          f'grad_norm={values["grad_norm"]}). The state was not updated by that step and '
          f'checkpoints up to step {last_saved} are intact; lower the learning rate or check '
          'the input.')


def _flush(run: run_lib.Run, pending: list) -> None:
  """Host sync: every pending step was finite; their mean goes to the writers."""
  if not pending:
    return
  fetched = jax.device_get([metrics for _, metrics in pending])
  _check_finite(pending, fetched, max(run.checkpointer.steps(), default=0))
  scalars = {f'train/{k}': float(np.mean([v[k] for v in fetched]))
             for k in fetched[0] if k not in ('finite', preemption.STOP_KEY)}
  run.writer.write(pending[-1][0], scalars)
  run.progress.update(pending[-1][0], scalars)
  pending.clear()


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *,
                       overwrite: bool = False) -> dict[str, Any]:
  """Trains (or resumes) in `workdir`; returns the final metrics and how the run ended.

  Evaluators run at their `every` and at the final step; a step's due evaluations follow its
  checkpoint, so a resumed run evaluates at the same steps as an uninterrupted one.
  """
  run = run_lib.prepare(config, workdir, overwrite=overwrite)
  try:
    with partitioning.use(run.setup.mesh, run.options.parallel.sharding):
      result = _train(run)
  finally:
    plot = run.close()
  return {**result, 'plot': plot}


def _train(run: run_lib.Run) -> dict[str, Any]:
  state, step, total = run.state, run.start_step, run.setup.total_steps
  book = run.options.bookkeeping
  pending, previous, outcome, final = [], None, 'completed', {}
  while step < total:
    batch = run.next_batch(step)
    state, metrics = run.train_step(state, batch)
    step += 1
    pending.append((step, metrics))
    # Step s-1's stop flag, reduced over every process, read after step s is queued: all
    # processes read the same value here, so all of them stop after the same step.
    stop = previous is not None and preemption.agreed(previous)
    previous = metrics
    if step % book.log_every == 0 or stop:
      _flush(run, pending)
    if stop:  # saved first: an evaluation due now comes after, as in an uninterrupted run
      run.save(step, state, wait=True)
      outcome = f'preempted at step {step} ({run.stops.reason or "another process"})'
    elif step % book.checkpoint_every == 0 and step < total:
      _flush(run, pending)
      run.save(step, state)
    due = [e for e in run.evaluators if e.due(step, total)]
    if due and step < total:
      final = run.evaluate(step, state, due)
    if stop:
      break
  _flush(run, pending)
  run.save(step, state, wait=True)
  if outcome == 'completed' and run.evaluators:  # every evaluator runs at the final step
    final = run.evaluate(step, state, run.evaluators)
  return {'outcome': outcome, 'step': step, **final}
