"""The package's layers, held by reading its source: the run config is read once, at the setup,
and the arrows between the packages point down."""

import ast
import pathlib

import pytest

from vit_jax import objectives
from vit_jax.configs import common

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / 'vit_jax'

# The setup layer: where a run's ConfigDict is read (`train/options.py`, and the objectives'
# `read` it calls), resolved and handed on (`train/run.py`, `train/setup.py`, `train/loop.py`).
SETUP = {'train/options.py', 'train/run.py', 'train/setup.py', 'train/loop.py'}
# Below it: these take typed options, never the config.
BELOW = ('train', 'evaluators', 'parallel', 'data')
# The parse of a run config: called only by the setup layer and the commands above it.
PARSERS = {'read', 'read_start', 'read_evals', 'read_distributed', 'read_length', 'resolve',
           'from_run_config'}
ABOVE = SETUP | {'main.py', 'plan.py', 'objectives/__init__.py'}


def _modules(*folders):
  for folder in folders:
    for path in sorted((PACKAGE / folder).rglob('*.py')):
      yield path.relative_to(PACKAGE).as_posix(), ast.parse(path.read_text(encoding='utf-8'))


def _imports(tree) -> set[str]:
  found = set()
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      found.update(alias.name for alias in node.names)
    elif isinstance(node, ast.ImportFrom) and node.module:
      found.update(f'{node.module}.{alias.name}' for alias in node.names)
  return found


def _config_reads(tree) -> list[int]:
  """Lines that call `.get(` on a name or attribute called `config`."""
  lines = []
  for node in ast.walk(tree):
    if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
        and node.func.attr == 'get'):
      owner = node.func.value
      name = owner.id if isinstance(owner, ast.Name) else getattr(owner, 'attr', '')
      if name == 'config':
        lines.append(node.lineno)
  return lines


def test_nothing_below_the_setup_touches_the_config():
  below = [(name, tree) for name, tree in _modules(*BELOW) if name not in SETUP]
  assert len(below) > 40  # the walk found the packages
  importers = [name for name, tree in below
               if any(i.split('.')[0] == 'ml_collections' for i in _imports(tree))]
  readers = {name: lines for name, tree in below if (lines := _config_reads(tree))}
  assert not importers, f'import ml_collections below the setup: {importers}'
  assert not readers, f'config.get( below the setup: {readers}'


def test_the_check_sees_a_config_read():
  """The two checks above can fail: each finds what it looks for in a made-up module."""
  tree = ast.parse('import ml_collections\ndef f(config):\n  return config.get("x")\n')
  assert 'ml_collections' in _imports(tree)
  assert _config_reads(tree) == [3]


def test_only_the_setup_parses_a_run_config():
  """`options.read*`, `options.resolve` and `build.from_run_config` of a run's config are
  called by the setup layer and the commands above it; weights/ reads saved runs through
  `build.from_run_config` too (a saved config.json has one reader, trained_model's)."""
  callers = {}
  for name, tree in _modules('.'):
    for node in ast.walk(tree):
      if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
          and node.func.attr in PARSERS
          and isinstance(node.func.value, ast.Name)
          and node.func.value.id in ('options', 'options_lib', 'build', 'build_lib')):
        callers.setdefault(name, set()).add(node.func.attr)
  outside = {name: sorted(calls) for name, calls in callers.items()
             if name not in ABOVE and not name.startswith(('weights/', 'viz/'))}
  assert not outside, f'a run config parsed below the setup: {outside}'
  assert 'train/run.py' in callers and 'main.py' in callers


@pytest.mark.parametrize('package, forbidden', [
    ('train', 'vit_jax.viz'), ('evaluators', 'vit_jax.viz'), ('objectives', 'vit_jax.viz'),
    ('objectives', 'vit_jax.weights.trained_model'), ('objectives', 'vit_jax.train'),
    ('evaluators', 'vit_jax.objectives'), ('models', 'vit_jax.train'),
    ('data', 'vit_jax.train'), ('parallel', 'vit_jax.train')])
def test_arrows_point_down(package, forbidden):
  wrong = {name: sorted(i for i in _imports(tree) if i.startswith(forbidden))
           for name, tree in _modules(package)}
  assert not {name: found for name, found in wrong.items() if found}


def test_saved_runs_are_rebuilt_by_their_objective():
  """No module switches on an objective's name but the objectives' own registry; the MAE
  figure and export check that the workdir they are given is an MAE run's."""
  switches = {}
  for name, tree in _modules('.'):
    for node in ast.walk(tree):
      if isinstance(node, ast.Compare) and any(
          isinstance(c, ast.Constant) and c.value in ('mae', 'classification', 'distillation')
          for c in node.comparators):
        switches.setdefault(name, []).append(node.lineno)
  assert not {name: lines for name, lines in switches.items()
              if not name.startswith(('objectives/', 'configs/', 'viz/reconstruction',
                                      'weights/hf_mae'))}


def test_the_official_checkpoint_api_is_a_facade_nothing_inside_uses():
  """`vit_jax.checkpoint` is for users of the official API; the package reads weights through
  `vit_jax.weights`."""
  users = [name for name, tree in _modules('.')
           if name != 'checkpoint.py' and 'vit_jax.checkpoint' in _imports(tree)]
  assert not users
  facade = ast.parse((PACKAGE / 'checkpoint.py').read_text(encoding='utf-8'))
  functions = [node.name for node in facade.body if isinstance(node, ast.FunctionDef)]
  assert functions == ['load', 'load_pretrained', 'infer_model_config']


def test_each_objective_registers_once_with_its_class():
  """`objectives.MODULES` is the one registry: each module's `OBJECTIVE` is its class, named as
  registered, and only dense freezes anything by itself (a probe's backbone)."""
  for name, module in objectives.MODULES.items():
    assert issubclass(module.OBJECTIVE, objectives.Objective) and module.OBJECTIVE.name == name
  dense_fields = objectives.dense.read_fields(common.get_config())
  assert objectives.MODULES['dense'].OBJECTIVE.frozen_params(dense_fields) == (
      r'(?!dense_head/).*',)
  assert objectives.MODULES['mae'].OBJECTIVE.frozen_params(None) == ()


def _flags_defined_on_import(tree) -> list[int]:
  """Lines of module-level `DEFINE_*(...)` calls: run on import, outside any function or
  `if __name__ == '__main__':`."""
  lines = []
  for statement in tree.body:
    if isinstance(statement, (ast.FunctionDef, ast.ClassDef, ast.If)):
      continue
    for node in ast.walk(statement):
      if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
          and node.func.attr.startswith('DEFINE')):
        lines.append(node.lineno)
  return lines


def _imported_modules() -> set[str]:
  """Every vit_jax module that the package, the tests or the experiments import."""
  root = PACKAGE.parent
  found = set()
  for path in [*PACKAGE.rglob('*.py'), *(root / 'tests').rglob('*.py'),
               *(root / 'experiments').rglob('*.py')]:
    for name in _imports(ast.parse(path.read_text(encoding='utf-8'))):
      parts = name.split('.')
      found.update('.'.join(parts[:i]) for i in range(2, len(parts) + 1) if parts[0] == 'vit_jax')
  return found


def test_a_module_others_import_defines_no_flags():
  """absl's flags are one table per process: a command's flags are defined only when it runs as
  the command, so a module imported as a library (`vit_jax.infer`, `vit_jax.convert`) cannot
  collide with the command that imports it or runs beside it (`tests/support/in_process.py`).
  `vit_jax.cli` is the exception: its `--traceback` is every command's."""
  imported = _imported_modules()
  defining = {}
  for name, tree in _modules('.'):
    module = 'vit_jax.' + name[:-3].replace('/', '.').removesuffix('.__init__')
    if module in imported and module != 'vit_jax.cli' and (lines := _flags_defined_on_import(tree)):
      defining[module] = lines
  assert {'vit_jax.infer', 'vit_jax.convert', 'vit_jax.train.loop'} <= imported  # the walk works
  assert not defining, defining


def test_the_flag_check_sees_a_definition_on_import():
  tree = ast.parse("from absl import flags\n_X = flags.DEFINE_string('x', None, '')\n"
                   "if __name__ == '__main__':\n  flags.DEFINE_string('y', None, '')\n")
  assert _flags_defined_on_import(tree) == [2]
