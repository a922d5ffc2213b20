r"""The memory plan of a run, without training: what the trainer checks before step 1.

  python -m vit_jax.plan --config=configs/i1k_s16.py --config.device_memory_gb=80 \
      --config.micro_batches=auto --config.model.remat=auto

Prints, per device, the parameters, optimizer state, batch, activations and temporaries of the
compiled train step (XLA's memory analysis) for the configured choice, or for the one `auto`
picks, and ends with the verdict: "fits: ...", or "does not fit: <how much over, what to
change>" with exit status 2 (as when `auto` finds nothing that fits).
"""

from absl import flags
from absl import logging
from ml_collections import config_flags

from vit_jax import errors
from vit_jax import cli

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Recipe file (configs/*.py[:arg]).',
                                          lock_config=False)


def main(argv):
  del argv
  if not flags.FLAGS['verbosity'].present:
    logging.set_verbosity(logging.WARNING)
  # The XLA flags the run will have: they change what the compiled step needs.
  from vit_jax.parallel import xla_flags  # pylint: disable=g-import-not-at-top
  xla_flags.apply()
  # After the flags: a bad flag is reported before JAX and TensorFlow load.
  from vit_jax.train import memory  # pylint: disable=g-import-not-at-top
  from vit_jax.train import options  # pylint: disable=g-import-not-at-top
  from vit_jax.train import setup  # pylint: disable=g-import-not-at-top
  config = _CONFIG.value
  if config.num_classes is None:
    raise errors.UserError(
        'config.num_classes is unset (a folder recipe takes it from the folder); '
        'set --config.num_classes to plan without reading the data.')
  read = options.read(config)
  # Memory does not depend on the step count: a schedule as long as the warmup will do.
  built = setup.build_setup(read, read.optimizer.schedule.warmup_steps + 1)
  if memory.AUTO in (read.step.micro_batches, read.remat):
    _, chosen = memory.resolve(built)  # the first choice that fits, or the refusal
  else:  # the configured choice, measured and judged whatever check_memory says
    chosen = memory.measure(built, memory.device_budget(read.memory))
  print(chosen.table())
  if not chosen.fits:  # the verdict, as the one line of a refusal (exit 2)
    raise errors.UserError(chosen.verdict())
  print(chosen.verdict())


if __name__ == '__main__':
  flags.mark_flag_as_required('config')
  cli.run(main)
