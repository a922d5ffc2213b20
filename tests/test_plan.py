"""The memory planner: budgets on CPU pick the expected micro-batches and remat policy, the
numbers are the compiled step's own memory analysis, and a run compiles its step once."""

import dataclasses
import logging
import os
import re
import subprocess
import sys

import jax
import numpy as np
import pytest

from vit_jax.train import loop
from vit_jax.train import memory as plan
from vit_jax.train import setup as setup_lib
from vit_jax.train import step as step_lib
from vit_jax.weights import workdir_params

import tiny_recipe

MICRO = (1, 2)


def _config(**fields):
  config = tiny_recipe.get_config()
  config.model.transformer.num_layers, config.model.scan = 2, True
  config.image_size, config.batch_size, config.mesh = 32, 64, (8, 1, 1)
  config.pp_device = ''  # float batches, memory only (uint8 ones: step.train_batch_spec)
  config.update(fields)
  return config


def _auto(budget_bytes):
  config = _config(micro_batches='auto', device_memory_gb=budget_bytes / plan.GIB)
  config.model.remat = 'auto'
  return _resolve(config)


def _resolve(config):
  return plan.resolve(setup_lib.from_config(config))


def _choice(setup):
  return setup.options.step.micro_batches, setup.remat


@pytest.fixture(scope='module')
def measured():
  """Every (micro_batches, remat) the budgets below choose among, compiled and measured once."""
  setup = setup_lib.from_config(_config())
  return {(m, r): plan.measure(plan.with_choice(setup, m, r))
          for m in MICRO for r in plan.REMAT_ORDER}


@pytest.fixture
def compiled_once(measured, monkeypatch):
  """`resolve` reads the fixture's measurements instead of compiling each choice again."""
  monkeypatch.setattr(plan, 'measure', lambda setup, budget=None: dataclasses.replace(
      measured[_choice(setup)], budget=budget))
  monkeypatch.setattr(plan, '_micro_batch_counts', lambda batch_size: list(MICRO))


def test_micro_batches_and_remat_trade_memory(measured):
  for remat in plan.REMAT_ORDER:
    assert measured[(1, remat)].temporaries > measured[(2, remat)].temporaries
  assert measured[(1, 'full')].temporaries < measured[(1, 'none')].temporaries / 2
  # The state is the same whatever the choice: parameters and Adam's two moments.
  assert len({(p.parameters, p.optimizer_state) for p in measured.values()}) == 1
  one = measured[(1, 'none')]
  assert 2 * one.parameters <= one.optimizer_state <= 2 * one.parameters + 64
  assert one.batch == 64 // 8 * (32 * 32 * 3 + 10 + 1) * 4  # this slice: images, labels, stop


def test_auto_takes_the_first_plan_that_fits(measured, compiled_once):
  order = [(m, r) for m in MICRO for r in plan.REMAT_ORDER]
  for budget in sorted({p.total for p in measured.values()}):
    expected = next(choice for choice in order if measured[choice].total <= budget)
    chosen, chosen_plan = _auto(budget)
    assert _choice(chosen) == expected and chosen.model.remat == expected[1], budget
    assert chosen_plan.total == measured[expected].total  # the compiled step's own analysis
  # Just below the lightest plan at one micro-batch, but above a heavier remat there: that one.
  first_remat = next(r for r in plan.REMAT_ORDER[1:]
                     if measured[(1, r)].total < measured[(1, 'none')].total)
  chosen, _ = _auto(measured[(1, 'none')].total - 1)
  assert _choice(chosen) == (1, first_remat)
  assert "micro_batches=1, remat='none'" in measured[(1, 'none')].table()


def test_a_budget_nothing_fits_is_refused_with_the_numbers(compiled_once):
  config = _config(micro_batches=1, device_memory_gb=1000 / plan.GIB)
  config.model.remat = 'auto'
  with pytest.raises(ValueError, match=r'No plan fits in 0.00 MiB per device: the smallest tried '
                     r'\(micro_batches=1, remat=.full.\) needs [\d.]+ MiB \([\d.]+ MiB over: '
                     r'parameters [\d.]+ MiB, optimizer state'):
    _resolve(config)
  with pytest.raises(ValueError, match='device_memory_gb must be positive'):
    _resolve(_config(device_memory_gb=-1.0))


def test_the_configured_step_is_compiled_once_and_checked(monkeypatch):
  """Without 'auto' fields the configured choice is compiled once and checked against the
  budget (device_memory_gb, else the device's own: the host's memory shared by CPU devices);
  one that does not fit is refused with the numbers; check_memory=False keeps the compile and
  drops the check."""
  compiles = []
  real_measure = plan.measure

  def counting(setup, budget=None):
    compiles.append(_choice(setup))
    return real_measure(setup, budget)
  monkeypatch.setattr(plan, 'measure', counting)
  _, chosen = _resolve(_config(micro_batches=1, device_memory_gb=80.0))
  assert chosen.fits and chosen.budget == 80 * plan.GIB and compiles == [(1, 'none')]
  _, chosen = _resolve(_config(micro_batches=1))  # the CPU devices' share of the host
  assert chosen.budget is not None and 0 < chosen.budget * jax.local_device_count() <= (
      os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES'))
  with pytest.raises(ValueError, match=r'^The train step does not fit: [\d.]+ MiB needed, '
                     r'0\.10 MiB per device \([\d.]+ MiB over\)\. Shard the state'):
    _resolve(_config(micro_batches=1, device_memory_gb=0.0001))
  _, chosen = _resolve(_config(micro_batches=1, device_memory_gb=0.0001, check_memory=False))
  assert chosen.budget is None and chosen.fits and chosen.compiled is not None


def test_a_bad_pp_train_is_refused_before_the_planner_compiles(monkeypatch, digits_data_dir,
                                                               tmp_path):
  monkeypatch.setattr(plan, 'measure', lambda *a, **k: pytest.fail('compiled before the check'))
  config = tiny_recipe.get_config(digits_data_dir)
  config.micro_batches, config.device_memory_gb = 'auto', 80.0
  config.pp_train = 'decode|inception_crop(16)|flip_lr|onehott|keep("image", "labels")'
  with pytest.raises(ValueError, match="Unknown preprocessing op 'onehott'"):
    loop.train_and_evaluate(config, str(tmp_path / 'w'))


def _three_steps(data_dir, **fields):
  config = tiny_recipe.get_config(data_dir)
  del config.evals['eval']
  config.update(total_steps=3, checkpoint_every=3, **fields)
  return config


@pytest.mark.parametrize('auto', [False, True])
def test_a_run_compiles_its_train_step_once(auto, digits_data_dir, tmp_path, monkeypatch):
  """The step checked against the budget is compiled once in the whole run, and that executable
  is the one every step calls, with or without 'auto' fields."""
  compiled, calls = [], []
  real_resolve = plan.resolve

  def recording(setup):
    setup, chosen = real_resolve(setup)
    executable = chosen.compiled

    def counted(*args):
      calls.append(chosen.budget)
      return executable(*args)
    return setup, dataclasses.replace(chosen, compiled=counted)
  monkeypatch.setattr(plan, 'resolve', recording)

  class Compiles(logging.Handler):
    def emit(self, record):
      if record.getMessage().startswith('Finished XLA compilation of jit(train_step)'):
        compiled.append(record)
  handler = Compiles()
  logging.getLogger('jax').addHandler(handler)
  config = _three_steps(digits_data_dir, device_memory_gb=80.0)
  if auto:
    config.micro_batches, config.model.remat = 'auto', 'auto'
  try:
    with jax.log_compiles(True):
      result = loop.train_and_evaluate(config, str(tmp_path / 'run'))
  finally:
    logging.getLogger('jax').removeHandler(handler)
  assert result['step'] == 3 and len(compiled) == 1, len(compiled)
  assert calls == [80 * plan.GIB] * 3


def test_a_step_that_does_not_fit_is_refused_before_the_claim(digits_data_dir, tmp_path):
  workdir = tmp_path / 'run'
  with pytest.raises(ValueError, match=r'^The train step does not fit: [\d.]+ MiB needed'):
    loop.train_and_evaluate(_three_steps(digits_data_dir, device_memory_gb=0.0001), str(workdir))
  assert not workdir.exists() or not any(workdir.iterdir())


def test_the_checked_executable_trains_as_the_jit_step(digits_data_dir, tmp_path, monkeypatch):
  """After 3 steps the parameters equal those of the step jitted at its first call (the path
  before the ahead-of-time compile)."""
  loop.train_and_evaluate(_three_steps(digits_data_dir), str(tmp_path / 'aot'))
  real_resolve = plan.resolve

  def jitted(setup):
    setup, chosen = real_resolve(setup)
    return setup, dataclasses.replace(chosen, compiled=step_lib.for_run(setup))
  monkeypatch.setattr(plan, 'resolve', jitted)
  loop.train_and_evaluate(_three_steps(digits_data_dir), str(tmp_path / 'jit'))
  (_, aot), (_, jit) = (workdir_params.read(str(tmp_path / name)) for name in ('aot', 'jit'))
  jax.tree.map(np.testing.assert_array_equal, aot, jit)


@pytest.mark.parametrize('budget_gb,code,last', [
    ('0.0001', 2, r'error: does not fit: [\d.]+ MiB needed, 0.10 MiB per device \([\d.]+ MiB '
                  r'over\)\. Shard the state'),
    ('80', 0, r'fits: [\d.]+ MiB of 80.00 GiB per device\.')])
def test_the_plan_command_ends_with_its_verdict(budget_gb, code, last):
  """`python -m vit_jax.plan` prints the table, then "fits: ..." (exit 0) or "does not fit:
  <how much over, what to change>" (exit 2), for the configured choice as for `auto`."""
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  result = subprocess.run(
      [sys.executable, '-m', 'vit_jax.plan', '--config=tests/tiny_recipe.py',
       f'--config.device_memory_gb={budget_gb}'], cwd=root, capture_output=True, text=True,
      timeout=240)
  lines = (result.stdout + result.stderr).strip().splitlines()
  assert result.returncode == code, result.stderr[-2000:]
  assert 'Memory plan per device' in result.stdout
  assert re.match(last, lines[-1]), lines[-3:]
