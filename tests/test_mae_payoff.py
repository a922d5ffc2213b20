"""The digits MAE as a user runs it pays off (experiments/mae_payoff.py): two seeds of
`configs/digits.py:mae` (the experiment runs three), the random encoder, and the 10%-label
fine-tune against scratch. A file of its own: at a few minutes it runs beside the rest of the
MAE tests."""

import importlib.util
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _mae_payoff():
  spec = importlib.util.spec_from_file_location(
      'mae_payoff', os.path.join(ROOT, 'experiments', 'mae_payoff.py'))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


@pytest.mark.slow
def test_the_digits_mae_pays_off(tmp_path):
  """configs/digits.py:mae as a user runs it, seeds 0 and 1 (experiments/mae_payoff.py runs
  three; its results: experiments/results/mae_payoff.md): (a) the masked-patch loss on the test digits is
  under the zero and the mean-patch predictors', (b) the 10-shot probes beat the random
  encoder's by more than the seed-to-seed spread, (c) fine-tuned on 10% of the labels (seed 0;
  the experiment does every seed) it beats the same model trained from scratch."""
  payoff = _mae_payoff()
  data_dir = str(tmp_path / 'data')
  rows = [payoff.payoff(seed, str(tmp_path), data_dir, finetune=seed == 0) for seed in (0, 1)]
  assert rows[0]['steps'] == 600  # the recipe's default run
  for claim, holds in payoff.verdict(rows):
    assert holds, (claim, rows)
  assert rows[0]['finetuned_top1'] > rows[0]['scratch_top1'] + 0.02, rows[0]
