r"""The paper's learning-rate sweep (Appendix B.1.1, Table 4): one run per rate, the best chosen
on the held-out part of the train split (`minival`), its test number reported.

  # the commands (one per rate; run them on your cluster, in any order):
  python experiments/sweep.py --config=configs/finetune.py:cifar10 --root=runs/sweep_cifar10 \
      --list -- --config.init_from=imagenet21k/ViT-B_16.npz --config.model_name=ViT-B_16
  # or run them here one after another, then choose:
  python experiments/sweep.py --config=configs/finetune.py:cifar10 --root=runs/sweep_cifar10 \
      --run -- --config.init_from=imagenet21k/ViT-B_16.npz --config.model_name=ViT-B_16
  python experiments/sweep.py --config=configs/finetune.py:cifar10 --root=runs/sweep_cifar10

The rates are the recipe source's (`source().choices['lr.base']`) unless --rates names others.
Choosing reads each run's `metrics.jsonl` (the last value of --select, default
`minival/accuracy`) and writes `<root>/sweep.md` and `sweep.json`: every rate with its held-out
and test numbers, the chosen one marked. Runs not finished are listed as such, never chosen.
"""

import argparse
import importlib.util
import json
import os
import shlex
import subprocess
import sys


def recipe_rates(config_arg: str) -> tuple[float, ...]:
  path, _, arg = config_arg.partition(':')
  spec = importlib.util.spec_from_file_location('recipe', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  source = module.source(arg) if arg else module.source()
  if 'lr.base' not in source.choices:
    sys.exit(f'error: {config_arg}: its source sweeps no learning rate; give --rates.')
  return tuple(source.choices['lr.base'])


def run_dir(root: str, rate: float) -> str:
  return os.path.join(root, f'lr_{rate:g}')


def command(config_arg: str, root: str, rate: float, extra: list[str]) -> list[str]:
  return [sys.executable, '-m', 'vit_jax.main', f'--config={config_arg}',
          f'--workdir={run_dir(root, rate)}', f'--config.lr.base={rate}', *extra]


def last_values(workdir: str) -> dict:
  """{metric: its last logged value} of a run, and 'step': the last step logged."""
  path = os.path.join(workdir, 'metrics.jsonl')
  found = {}
  if os.path.exists(path):
    with open(path, encoding='utf-8') as f:
      for line in f:
        if line.strip():
          found.update(json.loads(line))
  return found


def choose(root: str, rates, select: str, report: str) -> dict:
  """The sweep's table: each rate's held-out and reported numbers; the best held-out chosen."""
  rows = []
  for rate in rates:
    values = last_values(run_dir(root, rate))
    rows.append({'lr': rate, 'step': values.get('step'), select: values.get(select),
                 report: values.get(report)})
  done = [row for row in rows if row[select] is not None]
  best = max(done, key=lambda row: row[select]) if done else None
  table = {'select': select, 'report': report, 'rows': rows,
           'chosen_lr': best and best['lr'], 'chosen_' + report: best and best[report]}
  lines = [f'# Learning-rate sweep in {root}', '',
           f'Chosen on `{select}` (held out of training); `{report}` reported.', '',
           f'| lr | last step | {select} | {report} | |', '|---|---|---|---|---|']
  fmt = lambda v: '-' if v is None else f'{v:.4f}'  # pylint: disable=unnecessary-lambda-assignment
  for row in rows:
    mark = 'chosen' if best is row else ('not finished' if row[select] is None else '')
    lines.append(f'| {row["lr"]:g} | {row["step"]} | {fmt(row[select])} | {fmt(row[report])} '
                 f'| {mark} |')
  os.makedirs(root, exist_ok=True)
  with open(os.path.join(root, 'sweep.md'), 'w', encoding='utf-8') as f:
    f.write('\n'.join(lines) + '\n')
  with open(os.path.join(root, 'sweep.json'), 'w', encoding='utf-8') as f:
    json.dump(table, f, indent=2)
  print('\n'.join(lines))
  return table


def main(argv=None) -> int:
  argv = sys.argv[1:] if argv is None else argv
  extra = argv[argv.index('--') + 1:] if '--' in argv else []
  argv = argv[:argv.index('--')] if '--' in argv else argv
  parser = argparse.ArgumentParser(description=__doc__.split('\n', 1)[0])
  parser.add_argument('--config', required=True, help='recipe[:arg], e.g. configs/finetune.py:cifar10')
  parser.add_argument('--root', required=True, help='one workdir per rate goes under it')
  parser.add_argument('--rates', help='comma-separated learning rates (default: the source\'s)')
  parser.add_argument('--select', default='minival/accuracy', help='held-out metric to maximise')
  parser.add_argument('--report', default='eval/accuracy', help='the number to report')
  action = parser.add_mutually_exclusive_group()
  action.add_argument('--list', action='store_true', help='print the commands, run nothing')
  action.add_argument('--run', action='store_true', help='run them here, one after another')
  args = parser.parse_args(argv)
  rates = (tuple(float(r) for r in args.rates.split(',')) if args.rates
           else recipe_rates(args.config))
  commands = [command(args.config, args.root, rate, extra) for rate in rates]
  if args.list:
    print('\n'.join(shlex.join(c) for c in commands))
    return 0
  if args.run:
    for c in commands:
      print('+', shlex.join(c), flush=True)
      status = subprocess.run(c, check=False).returncode
      if status:
        print(f'error: the run for {c[4]} exited {status}; the others go on.', file=sys.stderr)
  choose(args.root, rates, args.select, args.report)
  return 0


if __name__ == '__main__':
  sys.exit(main())
