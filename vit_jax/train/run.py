"""One run's parts, wired from its config: the config read once (`options`), the workdir claimed,
the state restored or initialised, the input continuing at the saved position, the step, the
evaluators, the writers and the stop request. `loop.py` drives them; nothing here loops.

Startup goes from cheap to expensive, so a mistake is reported before the costly parts: the
config and the pp strings; the datasets and the checkpoint to start from; the workdir claim; the
memory plan (a compile, only when asked, whose executable is then the step); the state.
"""

import dataclasses
import functools
from typing import Any, Callable, Optional

from absl import logging
import jax

from vit_jax import evaluators as evaluators_lib
from vit_jax import storage
from vit_jax.weights import adapt
from vit_jax.weights import workdir_params
from vit_jax.data import dense_targets
from vit_jax.data import naflex as naflex_lib
from vit_jax.data import pipeline
from vit_jax.data import preprocess
from vit_jax.data import sources
from vit_jax.parallel import mesh as mesh_lib
from vit_jax.train import checkpointer as checkpointer_lib
from vit_jax.train import init_from
from vit_jax.train import input_checks
from vit_jax.train import metric_writer
from vit_jax.train import memory
from vit_jax.train import options as options_lib
from vit_jax.train import preemption
from vit_jax.train import probe
from vit_jax.train import progress as progress_lib
from vit_jax.train import setup as setup_lib
from vit_jax.train import state as state_lib
from vit_jax.train import step as step_lib
from vit_jax.train import workdir as workdir_lib


@dataclasses.dataclass
class Run:
  workdir: str
  config_dict: dict
  setup: setup_lib.Setup
  state: state_lib.TrainState
  start_step: int
  # Training metrics of the steps after the last logged row, carried by the checkpoint of an
  # agreed stop: [{'step': s, 'loss': ..., ...}], so the resumed run logs the rows an
  # uninterrupted one would.
  unlogged: list
  batches: pipeline.TrainIterator
  train_step: Any
  evaluators: list  # of evaluators.base.Evaluator
  checkpointer: checkpointer_lib.Checkpointer
  writer: metric_writer.MetricWriter
  progress: progress_lib.Progress
  stops: preemption.StopRequest
  train_source: Optional[sources.Source] = None

  @property
  def options(self) -> options_lib.Options:
    return self.setup.options

  @property
  def is_lead_process(self) -> bool:
    return jax.process_index() == 0

  def logged_at(self, step: int) -> dict:
    """What the run logged at `step` (process 0 reads it; the others get {})."""
    return workdir_lib.metrics_at(self.workdir, step) if self.is_lead_process else {}

  def next_batch(self, step: int) -> dict:
    """The next global batch, carrying this process's stop request."""
    batch = next(self.batches)
    naflex = self.options.data.naflex
    rows = self.options.data.batch_size if naflex is None else naflex.sequences
    local_batch = rows // jax.process_count()
    batch[preemption.STOP_KEY] = self.stops.flags(step, local_batch,
                                                  mesh_lib.batch_sharding(self.setup.mesh))
    return batch

  def save(self, step: int, state: state_lib.TrainState, wait: bool = False,
           unlogged: Optional[list] = None) -> None:
    if step in self.checkpointer.steps() and step not in self.checkpointer.damaged:
      return  # e.g. re-running a finished run
    data_state = self.batches.get_state()
    if unlogged:
      data_state = {**data_state, 'unlogged': unlogged}
    self.checkpointer.save(step, state, data_state, self.config_dict, wait=wait)

  def evaluate(self, step: int, state: state_lib.TrainState, due: list) -> dict[str, float]:
    """Runs the `due` evaluators (on the EMA parameters when the run keeps them)."""
    params = state.ema_params if state.ema_params is not None else state.params
    params = self.setup.objective.eval_params(params)
    result, notes = {}, []
    for evaluator in due:
      metrics = evaluator.run(params, step)
      result.update(metrics)
      notes.append(evaluator.summary(metrics))
    self.writer.write(step, result)
    self.progress.note(f'step {step}: ' + '; '.join(notes))
    return result

  def close(self, failed: bool = False) -> None:
    """Releases everything. After a failure (`failed`) each release is tried: the first error
    stands."""
    for release in (self.stops.restore_handlers, self.batches.close, self.checkpointer.close,
                    self.progress.close):
      try:
        release()
      except Exception:  # pylint: disable=broad-except
        if not failed:
          raise
        logging.exception('While closing after a failure:')


def _initial_state(setup: setup_lib.Setup, ckpt: checkpointer_lib.Checkpointer,
                   pretrained: Callable[[], Optional[init_from.Pretrained]],
                   probe_batches: Callable[[], pipeline.TrainIterator]):
  """(step, state, global data position, unlogged training rows): the newest valid
  checkpoint, else a fresh start (a linear probe's head_norm statistics measured on
  `probe_batches()`, a stream of its own: the training stream starts at 0 all the same)."""
  options = setup.options
  restored = ckpt.restore(setup.abstract_state)
  if restored is not None:
    return (restored.step, restored.state, pipeline.position_of(restored.data_state),
            list(restored.data_state.get('unlogged', [])))
  seed, ema = options.data.seed, options.step.ema
  state, _ = state_lib.create(setup.model, setup.tx, image_shape=options.data.image_shape,
                              seed=seed, mesh=setup.mesh, preset=options.parallel.sharding,
                              ema=ema)
  init = pretrained()
  if init is not None:
    params = adapt.adapt_params(init.loaded.params, jax.device_get(state.params),
                                source=init.path, dont_load=init.dont_load)
    state = state_lib.with_params(params, setup.tx, setup.shardings, seed=seed, ema=ema)
  if options.model.linear_probe:
    batches = probe_batches()
    try:
      params = probe.with_statistics(setup.objective.eval_model, state.params, batches,
                                     options.data.probe_stats_batches,
                                     step_lib.device_augment(setup))
    finally:
      batches.close()
    state = state_lib.with_params(params, setup.tx, setup.shardings, seed=seed, ema=ema)
  return 0, state, 0, []


def _packer(naflex: Optional[options_lib.Naflex]):
  """The host packing of a NaFlex run's local batches (None: one image per sequence); the
  setup has checked that the sequences split over the processes."""
  if naflex is None or naflex.images_per_sequence == 1:
    return None
  return functools.partial(naflex_lib.pack_batch,
                           num_sequences=naflex.sequences // jax.process_count(),
                           images_per_sequence=naflex.images_per_sequence)


def prepare(config, workdir: str, *, overwrite: bool = False) -> Run:
  """Every part of a run, checked before the first step. `config` (a ConfigDict) is read here
  and nowhere below: the parts take its typed `options`."""
  process_zero = jax.process_index() == 0
  storage.check_workdir(workdir)  # a URL nothing reads, a bucket without access: one line now
  # The config: what the training data and the init checkpoint decide, then read once.
  start = options_lib.read_start(config)
  train_source = sources.from_config(start.source)
  source_pp = init_from.source_input_transform(start.init, workdir)
  num_classes = input_checks.class_count(start, train_source)
  resolved = options_lib.resolve(config, num_classes=num_classes, source_pp=source_pp)
  config_dict = workdir_lib.config_dict(resolved)  # as given ('auto' fields stay 'auto')
  options = options_lib.read(resolved)
  data, device_pp = options.data, options.step.device_pp
  train_pp = preprocess.parse(data.pp_train, num_classes=data.num_classes)

  # The objective (a distillation teacher is read and checked here), mesh, abstract state.
  setup = setup_lib.build_setup(options, options.length.steps(train_source.num_examples))

  def make_dataset(position):
    return pipeline.train_dataset(
        train_source, train_pp, global_batch=data.batch_size, seed=data.seed,
        position=position, process_index=jax.process_index(), process_count=jax.process_count(),
        with_position=step_lib.needs_positions(options.step, setup.objective),
        repeats=data.repeated_aug, pack=_packer(data.naflex))
  objective = setup.objective
  input_checks.check_host_output(make_dataset(0).element_spec, device_pp,  # built, not read
                                 objective.needs_labels, data.naflex,
                                 objective.target_spec(data.batch_size, data.image_shape))
  if objective.targets:  # the first examples' per-pixel targets, read once
    dense_targets.check(train_source, train_pp, objective.targets[0], field='config.pp_train',
                        depth_range=(objective.fields.min_depth, objective.fields.max_depth))
  # Files and datasets: the evaluators' and the checkpoint to start from.
  evaluators = evaluators_lib.build_all(options.evals, setup.objective.eval_model, setup.mesh,
                                        setup.eval_param_shardings())

  @functools.cache
  def pretrained() -> Optional[init_from.Pretrained]:
    """`config.init_from`, loaded once and checked (None without one)."""
    if not options.init.path:
      return None
    run_pp = '|'.join(p for p in (data.pp_train, device_pp and device_pp.spec) if p)
    return init_from.Pretrained(
        options.init.path, init_from.load(options.init.path, options.model_config, run_pp),
        options.init.dont_load + setup.objective.fresh_params)
  if not workdir_params.checkpoints_dir(workdir).exists():
    pretrained()  # checked before the claim; a resume needs no source
  # The train step, compiled once (the 'auto' fields chosen) and checked against the device's
  # memory before the claim; this executable is the step the run trains with.
  setup, memory_plan = memory.resolve(setup)
  if process_zero and memory.AUTO in (options.step.micro_batches, options.remat):
    print(memory_plan.table(), flush=True)
  elif process_zero and memory_plan.budget is not None:
    print(f'Memory: {memory_plan.verdict()}', flush=True)
  if process_zero:  # only a config that passed every check above claims the workdir
    workdir_lib.claim(workdir, config_dict, overwrite)
    workdir_lib.write_labels(workdir, train_source.class_names)
    if source_pp and not (storage.path(workdir) / init_from.SOURCE_PP_FILE).exists():
      storage.write(storage.path(workdir) / init_from.SOURCE_PP_FILE, source_pp + '\n')
  step_fn = memory_plan.compiled
  extras = step_lib.place_extras(setup)  # a teacher's parameters, placed once

  def train_step(state, batch):
    return step_fn(state, batch, extras)
  bookkeeping = options.bookkeeping
  ckpt = checkpointer_lib.Checkpointer(workdir, max_to_keep=bookkeeping.keep_checkpoints,
                                       keep_period=bookkeeping.keep_period)
  def batches_from(position):
    return pipeline.TrainIterator(make_dataset, global_batch=data.batch_size,
                                  sharding=mesh_lib.batch_sharding(setup.mesh), position=position)
  start_step, state, position, unlogged = _initial_state(setup, ckpt, pretrained,
                                                         lambda: batches_from(0))
  if process_zero:  # rows past the restored step (or every row, when no step was saved) were
    workdir_lib.drop_metrics_after(workdir, start_step)  # written before a kill
  if process_zero and start_step:
    print(f'Resumed from the checkpoint at step {start_step}.', flush=True)

  batches = batches_from(position)
  return Run(workdir=workdir, config_dict=config_dict, setup=setup,
             state=state, start_step=start_step, unlogged=unlogged, batches=batches,
             train_step=train_step,
             evaluators=evaluators, checkpointer=ckpt,
             writer=metric_writer.MetricWriter(workdir, enabled=process_zero),
             progress=progress_lib.Progress(setup.total_steps, start_step, data.batch_size,
                                            bookkeeping.log_every, enabled=process_zero),
             stops=preemption.StopRequest(cluster_notice=ckpt.reached_preemption),
             train_source=train_source)
