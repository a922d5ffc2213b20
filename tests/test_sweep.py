"""experiments/sweep.py: the paper's learning-rate sweep, chosen on the held-out split."""

import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, 'experiments'))
import sweep  # pylint: disable=g-import-not-at-top,wrong-import-position


def test_the_rates_are_table_4s_and_each_run_is_one_command(capsys):
  assert sweep.recipe_rates(os.path.join(ROOT, 'configs/finetune.py:imagenet2012')) == (
      0.003, 0.01, 0.03, 0.06)
  assert sweep.main(['--config', os.path.join(ROOT, 'configs/finetune.py:cifar10'),
                     '--root', 'runs/s', '--list', '--', '--config.init_from=B16.npz']) == 0
  lines = capsys.readouterr().out.splitlines()
  assert len(lines) == 4
  assert all('--config.init_from=B16.npz' in line for line in lines)
  assert [line.split('--config.lr.base=')[1].split()[0] for line in lines] == [
      '0.001', '0.003', '0.01', '0.03']
  assert '--workdir=runs/s/lr_0.003' in lines[1]


def test_the_best_held_out_number_is_chosen_and_unfinished_runs_never(tmp_path):
  """The held-out metric decides, not the test number; a run with no held-out row is listed."""
  root = str(tmp_path)
  logged = {0.001: (0.80, 0.95), 0.003: (0.90, 0.85), 0.01: (0.85, 0.99), 0.03: None}
  for rate, values in logged.items():
    os.makedirs(sweep.run_dir(root, rate))
    rows = [{'step': 10, 'train/loss': 1.0}]
    if values:
      rows.append({'step': 500, 'minival/accuracy': values[0], 'eval/accuracy': values[1]})
    with open(os.path.join(sweep.run_dir(root, rate), 'metrics.jsonl'), 'w') as f:
      f.write(''.join(json.dumps(row) + '\n' for row in rows))
  table = sweep.choose(root, tuple(logged), 'minival/accuracy', 'eval/accuracy')
  assert (table['chosen_lr'], table['chosen_eval/accuracy']) == (0.003, 0.85)
  text = open(os.path.join(root, 'sweep.md')).read()
  assert '| 0.003 | 500 | 0.9000 | 0.8500 | chosen |' in text
  assert '| 0.03 | 10 | - | - | not finished |' in text
  assert json.load(open(os.path.join(root, 'sweep.json')))['chosen_lr'] == 0.003
