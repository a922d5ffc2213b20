"""The digits MAE as a user runs it pays off (experiments/mae_payoff.py): `configs/digits.py:mae`
at seed 0 against the random encoder, held against the seed-to-seed spread the experiment
measured over three seeds (its committed results; the experiment also fine-tunes every seed on
10% of the labels against scratch). A file of its own: it runs beside the rest of the MAE
tests."""

import importlib.util
import json
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, 'experiments', 'results', 'mae_payoff.json')


def _mae_payoff():
  spec = importlib.util.spec_from_file_location(
      'mae_payoff', os.path.join(ROOT, 'experiments', 'mae_payoff.py'))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


@pytest.mark.slow
def test_the_digits_mae_pays_off(tmp_path):
  """configs/digits.py:mae as a user runs it, seed 0 (experiments/mae_payoff.py runs three; its
  results: experiments/results/mae_payoff.md): (a) the masked-patch loss on the test digits is
  under the zero and the mean-patch predictors', (b) the 10-shot probe beats the random
  encoder's by more than the largest seed-to-seed spread of the experiment's three seeds."""
  payoff = _mae_payoff()
  row = payoff.payoff(0, str(tmp_path), str(tmp_path / 'data'), finetune=False)
  assert row['steps'] == 600  # the recipe's default run
  with open(RESULTS, encoding='utf-8') as f:
    committed = json.load(f)['rows']
  assert len(committed) == 3 and committed[0]['steps'] == row['steps']
  spread = max(payoff.spread([r[k] for r in committed]) for k in ('mae_10shot', 'random_10shot'))
  loss = row['losses']
  assert loss['model'] < min(loss['zero'], loss['mean_patch']), row
  assert row['mae_10shot'] - row['random_10shot'] > spread, (row, spread)
