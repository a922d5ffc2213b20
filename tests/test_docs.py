"""The docs stay true: every command in README.md and docs/ is run.

The fenced `bash` blocks are read off the pages and run in order, in a workspace that holds what
the commands name (`ViT-B_16.npz`, `/data/pets`, `dinov2-base/`, `cat.jpg`, ...) made small here,
with tiny settings appended (a one-layer model of width 16, two steps). A command whose data no
test machine holds (cifar10, VTAB) runs until it stops on the one line naming what is missing.
Commands for a cluster or the test suite itself are named with the test that runs them. Blocks
of `$ command` lines with their output (transcripts) are run and their output compared. Python
blocks must compile and name only attributes our modules have.
"""

import ast
import importlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys

import jax
import numpy as np
from PIL import Image
import pytest

from vit_jax import checkpoint
from vit_jax import models
from vit_jax.configs import models as model_configs
from vit_jax.configs import reference

from support import in_process
from support import write_image_folder

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAGES = ['README.md'] + sorted(f'docs/{name}' for name in os.listdir(os.path.join(ROOT, 'docs'))
                               if name.endswith('.md'))
# Commands that need what a test cannot have (a cluster) or are the suite itself: (pattern,
# the file that runs them, what that file must hold).
ELSEWHERE = (
    (r'python -m pytest$', '.ci/run', 'python -m pytest'),
    (r'--num_processes=', 'tests/test_multihost_runs.py', '--num_processes'),
    (r'\bsbatch experiments/launch/slurm\.sbatch', 'tests/test_multihost_runs.py', 'slurm.sbatch'),
    (r'experiments/launch/tpu_vm\.sh ', 'tests/test_launch.py', 'tpu_vm.sh'),
    (r'kubectl apply -f experiments/launch/kubernetes\.yaml', 'tests/test_launch.py',
     'kubernetes.yaml'),
    (r'bash experiments/gpu_check\.sh', 'tests/test_gpu_check.py', 'gpu_check.sh'),
    # A package index and a GPU image: the import half and the dry runs are the suite's.
    (r'bash experiments/device/(wheels|run|rehearse)\.sh', 'tests/test_gpu_check.py',
     'image_only.py'),
    (r'--workdir=gs://', 'tests/test_object_store.py', 'gs://'),
    (r'python -m pytest -n 0 tests/test_chaos\.py', 'tests/test_chaos.py', 'VIT_JAX_CHAOS_TRIALS'),
)
# Datasets no test machine has: the command must stop naming them, in one line.
ABSENT = ('cifar10', 'clevr', 'dense.py:ade20k_', 'dense.py:nyu_')
TINY_MODEL = ['--config.model.hidden_size=16', '--config.model.transformer.mlp_dim=32',
              '--config.model.transformer.num_heads=2', '--config.model.transformer.num_layers=1']
TINY_RUN = ['--config.total_steps=2', '--config.batch_size=16', '--config.eval_batch_size=16',
            '--config.log_every=1', '--config.checkpoint_every=2',
            '--config.lr.warmup_steps=1'] + TINY_MODEL
_RAN: dict[str, subprocess.CompletedProcess] = {}  # a command two pages give runs once


def fenced_blocks(page: str) -> list[tuple[str, str]]:
  with open(os.path.join(ROOT, page), encoding='utf-8') as f:
    return re.findall(r'^```(\w*)\n(.*?)^```', f.read(), flags=re.S | re.M)


def _words(line: str) -> list[str]:
  """A shell line's words; a `#` that starts a word starts a comment (as in bash)."""
  return shlex.split(re.sub(r'(^|\s)#.*$', '', line))


def commands(page: str) -> list[list[str]]:
  """The page's bash commands as words, continuation lines joined, comments dropped, split at
  `&&` into steps; `pip install` steps are left out (CI installs first)."""
  found = []
  for language, text in fenced_blocks(page):
    if language != 'bash':
      continue
    for line in text.replace('\\\n', ' ').splitlines():
      step = []
      for word in _words(line) + ['&&']:
        if word != '&&':
          step.append(word)
          continue
        if step and step[:2] != ['pip', 'install']:
          found.append(step)
        step = []
  return found


def _tiny_vit(name: str, num_classes: int = 5, image_size: int = 224):
  """Parameters of `name` with the tiny width and depth the commands are run with."""
  config = model_configs.get_config(name)
  config.hidden_size = 16
  config.transformer.update(mlp_dim=32, num_heads=2, num_layers=1)
  model = models.VisionTransformer(num_classes=num_classes, **config)
  return model.init(jax.random.key(0), np.zeros((1, image_size, image_size, 3), np.float32),
                    train=False)['params']


def _image(path, seed):
  pixels = np.random.default_rng(seed).integers(0, 256, (40, 48, 3), dtype=np.uint8)
  Image.fromarray(pixels).save(path)


@pytest.fixture(scope='module')
def workspace(tmp_path_factory):
  """A working directory with every file the docs' commands name, and the digits main job
  (the README's first command, tiny) already run."""
  ws = tmp_path_factory.mktemp('docs')
  for name in ('configs', 'experiments'):
    os.symlink(os.path.join(ROOT, name), ws / name)
  write_image_folder(ws / 'pets', {'': {'abyssinian': 12, 'beagle': 12, 'chihuahua': 12}})
  b16 = _tiny_vit('ViT-B_16')
  for path in ('ViT-B_16.npz', 'imagenet21k/ViT-B_16.npz', 'R50+ViT-B_16.npz'):
    os.makedirs(os.path.dirname(ws / path), exist_ok=True)
    checkpoint.save(b16, str(ws / path))
  os.makedirs(ws / 'imagenet21k+imagenet2012', exist_ok=True)
  checkpoint.save(_tiny_vit('ViT-L_16', num_classes=1000),
                  str(ws / 'imagenet21k+imagenet2012' / 'ViT-L_16.npz'))
  for index, name in enumerate(('cat.jpg', 'dog.png', 'my_cat.jpg')):
    _image(ws / name, index)
  (ws / 'labels.txt').write_text(''.join(f'class {i}\n' for i in range(5)))
  _hf_dinov2(ws / 'dinov2-base')
  (ws / 'tfds').mkdir()
  run(ws, 'python -m vit_jax.main --config=configs/digits.py --workdir=workdirs/digits')
  return ws


def _hf_dinov2(path):
  """A DINOv2 directory as transformers writes it (save_pretrained), random and tiny."""
  # PyTorch: imported only by the tests that build a reference.
  import transformers  # pylint: disable=g-import-not-at-top
  config = transformers.Dinov2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                     intermediate_size=64, image_size=28, patch_size=14)
  transformers.Dinov2Model(config).eval().save_pretrained(str(path))
  transformers.BitImageProcessor(
      do_resize=True, size={'shortest_edge': 32}, resample=3, do_center_crop=True,
      crop_size={'height': 28, 'width': 28}, do_normalize=True,
      image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225]).save_pretrained(str(path))


def _mapped(ws, word: str) -> str:
  """The docs' absolute paths, inside the workspace."""
  return word.replace('/data/pets', str(ws / 'pets')).replace('/data/tfds', str(ws / 'tfds'))


def run(ws, command: str, tiny: bool = True) -> subprocess.CompletedProcess:
  """Runs one docs command in `ws` (with the tiny settings unless `tiny=False`) in this
  process (`support.in_process`, on its simulated devices); returns the finished command. A command
  already run in this workspace with success is not run again (the README repeats the docs'
  commands)."""
  key = f'{ws}|{tiny}|{command}'
  if key not in _RAN or _RAN[key].returncode:
    _RAN[key] = _run(ws, command, tiny)
  return _RAN[key]


def _run(ws, command: str, tiny: bool) -> subprocess.CompletedProcess:
  words = _words(command)
  env = dict(os.environ, TFDS_DATA_DIR=str(ws / 'tfds'), PYTHONPATH=ROOT)
  while words and re.fullmatch(r'[A-Z_]+=.*', words[0]):
    key, value = words.pop(0).split('=', 1)
    env[key] = _mapped(ws, value)
  if tiny and words[:2] == ['python', '-m'] and words[2] in ('vit_jax.main', 'vit_jax.plan'):
    evaluating = '--mode=eval' in words
    words += TINY_MODEL if words[2] == 'vit_jax.plan' else [] if evaluating else TINY_RUN
  words = [sys.executable if w == 'python' else _mapped(ws, w) for w in words]
  return in_process.run(words, cwd=ws, env=env)


def _elsewhere(command: str):
  for pattern, where, holds in ELSEWHERE:
    if re.search(pattern, command):
      return where, holds
  return None


@pytest.mark.parametrize('page', PAGES)
def test_every_command_on_the_page_runs(page, workspace):
  for words in commands(page):
    step = shlex.join(words)
    elsewhere = _elsewhere(step)
    if elsewhere is not None:  # run by another test, which must hold the same program
      where, holds = elsewhere
      with open(os.path.join(ROOT, where), encoding='utf-8') as f:
        assert holds in f.read(), (page, step, where)
      continue
    done = run(workspace, step)
    lines = done.stderr.strip().splitlines()
    if any(name in step for name in ABSENT):
      assert done.returncode != 0 and lines and lines[-1].startswith('error: '), (
          page, step, done.stderr[-2000:])
      assert 'not prepared' in lines[-1], (page, step, lines[-1])
      continue
    assert done.returncode == 0, (page, step, done.stdout[-1000:], done.stderr[-3000:])


def test_transcripts_print_what_the_docs_say(workspace):
  """`$ command` lines followed by their output, in plain fenced blocks."""
  checked = 0
  for page in PAGES:
    for language, text in fenced_blocks(page):
      lines = text.splitlines()
      if language or not lines or not lines[0].startswith('$ '):
        continue
      for command, expected in zip(lines[::2], lines[1::2]):
        done = run(workspace, command[2:], tiny=False)
        assert expected in done.stderr + done.stdout, (page, command, done.stderr[-1000:])
        checked += 1
  assert checked >= 2


_IMPORT = re.compile(r'^(?:from (vit_jax[\w.]*) import (.+)|import (vit_jax[\w.]*))$', re.M)


@pytest.mark.parametrize('page', PAGES)
def test_python_blocks_name_what_exists(page):
  """Every python block compiles, and every `alias.name` of a vit_jax module it imports exists."""
  for language, text in fenced_blocks(page):
    if language != 'python':
      continue
    ast.parse(text)  # compiles
    aliases = {}
    for package, names, module in _IMPORT.findall(text):
      if module:
        aliases[module.rsplit('.', 1)[-1]] = module
        continue
      for item in names.split(','):
        name, _, alias = item.strip().partition(' as ')
        target = f'{package}.{name}'
        try:
          importlib.import_module(target)
        except ModuleNotFoundError:
          assert hasattr(importlib.import_module(package), name), (page, target)
          continue
        aliases[alias or name] = target
    for alias, attribute in re.findall(r'\b(\w+)\.(\w+)\b', text):
      if alias in aliases:
        assert hasattr(importlib.import_module(aliases[alias]), attribute), (
            page, f'{aliases[alias]}.{attribute}')


def test_the_config_reference_is_every_field_of_common_with_its_default():
  """docs/config_reference.md is `python -m vit_jax.configs.reference`: a field added, removed
  or given another default in vit_jax/configs/common.py fails here until the page follows."""
  assert set(reference.MEANINGS) == set(reference.fields()), (
      sorted(set(reference.fields()) ^ set(reference.MEANINGS)))
  with open(os.path.join(ROOT, 'docs', 'config_reference.md'), encoding='utf-8') as f:
    assert f.read() == reference.markdown(), (
        'regenerate: python -m vit_jax.configs.reference > docs/config_reference.md')


def _mae_payoff_quotes(results):
  """The docs' MAE table: per figure, the three seeds' values as the page prints them."""
  rows = results['rows']
  cells = lambda values: ' | '.join(f'{v:.3f}' for v in values)  # pylint: disable=unnecessary-lambda-assignment
  return [cells(r['losses']['model'] for r in rows), cells(r['mae_10shot'] for r in rows),
          cells(r['random_10shot'] for r in rows), cells(r['finetuned_top1'] for r in rows),
          cells(r['scratch_top1'] for r in rows)]


def _mae_levers_quotes(results):
  """The 1,500-step levers: the recipe's old mask ratio learns, mask 0.5 is as good."""
  rows = {r['lever']: r for r in results['rows']}
  baseline = rows['baseline']
  return [f"loss {baseline['loss']:.2f}, 10-shot {baseline['trained_10shot']:.3f} against "
          f"{baseline['random_10shot']:.3f}", f"1500 steps ({rows['mask_0.5']['trained_10shot']:.3f})"]


def _deit_quotes(results):
  rows = results['rows']
  seeds = lambda key: ' / '.join(f'{r[key]:.3f}' for r in rows)  # pylint: disable=unnecessary-lambda-assignment
  return [f"top-1 {results['teacher_top1']:.3f}", f"Distilled: {seeds('distilled_top1')}",
          f"labels alone: {seeds('labels_only_top1')}"]


def _deit_300_quotes(results):
  """The one seed of three where the distilled student wins at 300 steps."""
  wins = [r for r in results['rows'] if r['distilled_top1'] > r['labels_only_top1']]
  assert len(wins) == 1, wins
  return [f"wins one seed of three ({wins[0]['distilled_top1']:.3f} against "
          f"{wins[0]['labels_only_top1']:.3f})"]


def _bench_cpu_quotes(results):
  """experiments/README's table: images/s of ours, PyTorch and plain JAX, and their ratios."""
  rate = {(r['impl'], r['mode'], r['variant']): r['images_per_s'] for r in results['rows']}
  quotes = []
  for variant in ('S/16', 'B/16'):
    for mode, shown in (('train', 'train'), ('infer', 'inference')):
      ours, torch_hf, plain = (rate[(impl, mode, variant)]
                               for impl in ('ours', 'torch_hf', 'plain_jax'))
      quotes.append(f'| {variant} | {shown} | {_figures(ours)} | {_figures(torch_hf)} | '
                    f'{_figures(plain)} | **{ours / torch_hf:.2f}x** |')
  return quotes


def _figures(value):
  """Three significant figures, as the tables print images/s."""
  return f'{value:.3g}' if value >= 10 else f'{value:.2f}'


def _digits_quotes(metrics):
  """The digits main job's final test accuracy (its last eval line)."""
  final = [m for m in metrics if 'eval/accuracy' in m][-1]
  return [f"{100 * final['eval/accuracy']:.2f}%"]


# (page, a results file of experiments/results/, what the page must quote from it)
QUOTED = [('docs/objectives.md', 'mae_payoff.json', _mae_payoff_quotes),
          ('docs/objectives.md', 'mae_levers_1500.json', _mae_levers_quotes),
          ('docs/objectives.md', 'deit_payoff.json', _deit_quotes),
          ('docs/objectives.md', 'deit_payoff_300.json', _deit_300_quotes),
          ('experiments/README.md', 'bench_cpu.json', _bench_cpu_quotes),
          ('experiments/README.md', 'digits/metrics.jsonl', _digits_quotes),
          ('docs/evaluation.md', 'digits/metrics.jsonl', _digits_quotes)]


@pytest.mark.parametrize('page,results,quotes', QUOTED)
def test_numbers_a_page_quotes_from_experiments_match_the_file(page, results, quotes):
  with open(os.path.join(ROOT, 'experiments', 'results', results), encoding='utf-8') as f:
    data = [json.loads(line) for line in f] if results.endswith('.jsonl') else json.load(f)
  expected = quotes(data)
  with open(os.path.join(ROOT, page), encoding='utf-8') as f:
    text = ' '.join(f.read().split())  # a quote may wrap across lines
  for quote in expected:
    assert quote in text, (page, results, quote)


def _anchors(path: str) -> set[str]:
  """The GitHub anchors of a Markdown file's headings."""
  with open(path, encoding='utf-8') as f:
    headings = re.findall(r'^#+ (.*)$', f.read(), flags=re.M)
  return {re.sub(r'[^\w\- ]', '', h.strip().lower()).replace(' ', '-') for h in headings}


@pytest.mark.parametrize('page', PAGES + ['experiments/README.md'])
def test_every_link_and_anchor_resolves(page):
  with open(os.path.join(ROOT, page), encoding='utf-8') as f:
    text = re.sub(r'```.*?```', '', f.read(), flags=re.S)  # code blocks hold no links
  for target in re.findall(r'\]\(([^)\s]+)\)', text):
    if target.startswith(('http://', 'https://')):
      continue
    path, _, anchor = target.partition('#')
    found = os.path.normpath(os.path.join(ROOT, os.path.dirname(page), path)) if path else (
        os.path.join(ROOT, page))
    assert os.path.exists(found), (page, target)
    if anchor and found.endswith('.md'):
      assert anchor in _anchors(found), (page, target)


def _experiment_commands():
  """experiments/README.md's `python experiments/...` commands, split into words."""
  return [words for words in commands('experiments/README.md')
          if words[:2] == ['python', words[1]] and words[1].startswith('experiments/')]


def test_experiments_readme_commands_are_true(tmp_path):
  """The cheap one runs and rewrites its committed result unchanged (run from a copy, so the
  checkout is not touched); the benchmarks, hours on CPU at the sizes quoted, accept every
  flag the page gives them (their tiny runs are tests/test_gpu_check.py's)."""
  found = _experiment_commands()
  assert {w[1] for w in found} >= {'experiments/scaling_model.py', 'experiments/bench/harness.py',
                                   'experiments/bench/cpu_peers.py',
                                   'experiments/bench/cpu_levers.py'}, found
  env = dict(os.environ, PYTHONPATH=ROOT, XLA_FLAGS='')
  for words in found:
    script = os.path.join(ROOT, words[1])
    if words[1] == 'experiments/scaling_model.py':
      copy = tmp_path / 'experiments'
      (copy / 'results').mkdir(parents=True)
      shutil.copy(script, copy)
      done = subprocess.run([sys.executable, str(copy / 'scaling_model.py')], env=env,
                            capture_output=True, text=True, timeout=120, check=False)
      assert done.returncode == 0, done.stderr[-2000:]
      with open(os.path.join(ROOT, 'experiments', 'results', 'scaling_model.md'),
                encoding='utf-8') as f:
        assert (copy / 'results' / 'scaling_model.md').read_text() == f.read()
      continue
    done = subprocess.run([sys.executable, script, '--help'], env=env, capture_output=True,
                          text=True, timeout=120, check=False)
    assert done.returncode == 0, (words, done.stderr[-2000:])
    for flag in (w.split('=')[0] for w in words[2:] if w.startswith('--')):
      assert flag in done.stdout, (words, flag)
