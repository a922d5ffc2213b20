"""The training loop, and only the loop: steps, agreed stops, checkpoints, evaluations, metrics.

Everything it runs is built elsewhere: `run.prepare` (state, input, step, evaluators, writers)
from `setup`, `checkpointer`, `preemption`, `workdir`, `metric_writer` and `progress`.
"""

from typing import Any, Callable, Optional

import jax
from jax.experimental import multihost_utils
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


def _fetch(run: run_lib.Run, pending: list) -> list[dict]:
  """Host sync: the pending steps' metrics as host floats ({'step': s, name: value}), each
  step checked finite."""
  fetched = jax.device_get([metrics for _, metrics in pending])
  _check_finite(pending, fetched, max(run.checkpointer.steps(), default=0))
  return [{'step': number, **{k: float(v) for k, v in values.items() if k != preemption.STOP_KEY}}
          for (number, _), values in zip(pending, fetched)]


def _flush(run: run_lib.Run, pending: list) -> None:
  """Every pending step was finite; their mean (in float64, whether the steps ran in this
  process or came with the checkpoint) goes to the writers."""
  if not pending:
    return
  rows = _fetch(run, pending)
  scalars = {f'train/{k}': float(np.mean([row[k] for row in rows]))
             for k in rows[0] if k not in ('step', 'finite')}
  run.writer.write(rows[-1]['step'], scalars)
  run.progress.update(rows[-1]['step'], scalars)
  pending.clear()


def _finished(run: run_lib.Run, logged: dict) -> bool:
  """Whether the run logged its end (`logged`: its rows at the last step, read on process 0):
  the final evaluation, or without evaluators the last training row. Every process gets
  process 0's answer."""
  done = (any(not k.startswith('train/') for k in logged) if run.evaluators
          else 'train/loss' in logged)
  if jax.process_count() > 1:
    done = bool(multihost_utils.broadcast_one_to_all(np.int32(done)))
  return done


def train_and_evaluate(config, workdir: str, *,
                       overwrite: bool = False,
                       figures: Optional[Callable[..., dict[str, Any]]] = None) -> dict[str, Any]:
  """Trains (or resumes) in `workdir`; returns the final metrics and how the run ended.

  Evaluators run at their `every` and at the final step; a step's due evaluations follow its
  checkpoint, so a resumed run evaluates at the same steps as an uninterrupted one. `figures`
  (the command layer's `vit_jax.viz.run_figures.write`) writes the run's figures on process 0
  when it ends without failure; what it returns joins the result.
  """
  run = run_lib.prepare(config, workdir, overwrite=overwrite)
  try:
    with partitioning.use(run.setup.mesh, run.options.parallel.sharding):
      result, state, trained = _train(run)
      if figures is not None and run.is_lead_process:
        completed = trained and result['outcome'] == 'completed'
        result.update(figures(run, state, completed))
  except BaseException:
    run.close(failed=True)
    raise
  run.close()
  return result


def _train(run: run_lib.Run) -> tuple[dict[str, Any], Any, bool]:
  """(result, last state, whether any step ran)."""
  state, step, total = run.state, run.start_step, run.setup.total_steps
  bookkeeping = run.options.bookkeeping
  logged = run.logged_at(step) if step >= total else {}
  if step >= total and _finished(run, logged):  # started again: nothing to train, log, evaluate
    return {'outcome': 'completed', 'step': step,
            **{k: v for k, v in logged.items() if not k.startswith('train/')}}, state, False
  # Steps after the last logged row come back with an agreed stop's checkpoint.
  pending = [(row['step'], {k: v for k, v in row.items() if k != 'step'})
             for row in run.unlogged]
  previous, outcome, final = None, 'completed', {}
  while step < total:
    batch = run.next_batch(step)
    state, metrics = run.train_step(state, batch)
    step += 1
    pending.append((step, metrics))
    # Step s-1's stop flag, reduced over every process, read after step s is queued: all
    # processes read the same value here, so all of them stop after the same step. At the last
    # step a stop is the end of the run.
    stop = step < total and previous is not None and preemption.agreed(previous)
    previous = metrics
    checkpoint_due = step % bookkeeping.checkpoint_every == 0 and step < total
    if step % bookkeeping.log_every == 0 or checkpoint_due:  # a checkpoint follows its rows
      _flush(run, pending)
    if stop:  # saved first: an evaluation due now comes after, as in an uninterrupted run
      # The steps since the last logged row go with the checkpoint, not into a shorter row.
      unlogged = _fetch(run, pending)
      pending.clear()
      run.save(step, state, wait=True, unlogged=unlogged)
      outcome = f'preempted at step {step} ({run.stops.reason or "another process"})'
    elif checkpoint_due:
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
  return {'outcome': outcome, 'step': step, **final}, state, True
