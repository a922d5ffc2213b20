r"""The command users launch: training (pretraining or fine-tuning) and evaluation.

  python -m vit_jax.main --config=configs/digits.py --workdir=/tmp/digits
  python -m vit_jax.main --config=configs/finetune.py:cifar10 --workdir=DIR \
      --config.init_from=ViT-B_16.npz --config.model_name=ViT-B_16
  python -m vit_jax.main --mode=eval --config=configs/digits.py --checkpoint=/tmp/digits
  python -m vit_jax.main --mode=eval --config=configs/paper_evals.py --checkpoint=ViT-B_16.npz \
      --workdir=reports/b16
"""

import os

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from vit_jax import cli

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Recipe file (configs/*.py[:arg]).',
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Run directory: checkpoints, metrics, plots. '
                                '--mode=eval: where report.md and report.json go.')
_MODE = flags.DEFINE_enum('mode', 'train', ['train', 'eval'], 'Train (and evaluate), or only '
                          'run every evaluator of the config on --checkpoint.')
_CHECKPOINT = flags.DEFINE_string('checkpoint', None, f'--mode=eval: {cli.CHECKPOINT_HELP}')
_OVERWRITE = flags.DEFINE_bool('overwrite', False, 'Start afresh: delete the run in --workdir '
                               '(checkpoints, metrics, config) before training.')
_COORDINATOR = flags.DEFINE_string('coordinator_address', None, 'Multi-host: host:port of '
                                   'process 0 (default: auto-detected on TPU/SLURM).')
_NUM_PROCESSES = flags.DEFINE_integer('num_processes', None, 'Multi-host: number of processes.')
_PROCESS_ID = flags.DEFINE_integer('process_id', None, 'Multi-host: this process\'s index.')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  # XLA reads its flags when the first backend starts: ours go in first (a user's value wins).
  from vit_jax.parallel import xla_flags  # pylint: disable=g-import-not-at-top
  xla_flags.apply()
  # TensorFlow only feeds the input pipeline: keep it off the accelerators.
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  tf.config.set_visible_devices([], 'GPU')

  if not flags.FLAGS['verbosity'].present:
    logging.set_verbosity(logging.WARNING)  # orbax and tfds are chatty at INFO
  config = _CONFIG.value
  if _MODE.value == 'eval' and not _CHECKPOINT.value:
    raise app.UsageError('--mode=eval needs --checkpoint=<workdir or .npz>.')
  if _MODE.value == 'train' and not _WORKDIR.value:
    raise app.UsageError('Training needs --workdir=<run directory>.')
  # The modules that import TensorFlow or touch devices come after TensorFlow is kept off them.
  from vit_jax.parallel import distributed  # pylint: disable=g-import-not-at-top
  from vit_jax.train import options  # pylint: disable=g-import-not-at-top
  peers = distributed.join(options.read_distributed(config), _COORDINATOR.value,
                           _NUM_PROCESSES.value, _PROCESS_ID.value)
  try:
    _run(config)
  except BaseException as e:
    if peers is not None:
      if not isinstance(e, cli.USER_ERRORS):  # e.g. a collective broken by a lost peer
        peers.await_verdict()
      peers.silence()  # fall silent: the other processes see this one lost and exit too
    raise
  distributed.leave(peers)
  logging.flush()


def _run(config) -> None:
  if _MODE.value == 'eval':  # (imports here: after TensorFlow is kept off the accelerators)
    import vit_jax.evaluators  # pylint: disable=g-import-not-at-top
    from vit_jax.evaluators import paper_report  # pylint: disable=g-import-not-at-top
    from vit_jax.train import options  # pylint: disable=g-import-not-at-top
    reporting = bool(_WORKDIR.value)  # a report goes to --workdir; datasets absent are listed
    result = vit_jax.evaluators.evaluate_checkpoint(options.read_evals(config), _CHECKPOINT.value,
                                                    skip_missing=reporting)
    missing = result.pop('missing', {})
    protocol = result.pop('protocol', {})
    for key, value in result.items():
      print(f'{_CHECKPOINT.value}: {key} {value:.6g}')
    for name, why in missing.items():
      print(f'{name}: not run: {why}')
    if reporting:
      path = paper_report.write(os.path.expanduser(_WORKDIR.value), _CHECKPOINT.value, result,
                                missing, config.get('paper_model'), protocol)
      print(f'Report: {path}')
    return
  from vit_jax.train import loop  # pylint: disable=g-import-not-at-top  (as above)
  from vit_jax.viz import run_figures  # pylint: disable=g-import-not-at-top
  result = loop.train_and_evaluate(config, os.path.expanduser(_WORKDIR.value),
                                   overwrite=_OVERWRITE.value, figures=run_figures.write)
  summary = ', '.join(f'{k} {v:.4g}' for k, v in result.items()
                      if '/' in k and isinstance(v, float))
  if result['outcome'] == 'completed':
    print(f'Run completed at step {result["step"]}. {summary}'.strip())
  else:
    print(f'Run {result["outcome"]}: saved; restart the same command to continue.')
  if result.get('plot'):
    print(f'Curves: {result["plot"]}')


if __name__ == '__main__':
  cli.run(main)
