"""A dataset prepared once across processes: two processes on an empty data dir both get the
digits (process 0 builds, process 1 waits for its verdict); a failure on process 0 is one line on
process 1; a wait past the bound is one line."""

import os
import socket
import subprocess
import sys

import pytest

from vit_jax import errors
from vit_jax.data import folders
from vit_jax.data import preparation

from support import write_image_folder

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKER = r"""
import sys
import jax
from vit_jax import errors
from vit_jax.data import preparation, sources
port, pid, mode, data_dir = sys.argv[1:5]
jax.distributed.initialize(f'localhost:{port}', num_processes=2, process_id=int(pid))
try:
  if mode == 'digits':
    print('examples', sources.digits_source('train', data_dir=data_dir).num_examples, flush=True)
  else:  # process 0's preparation fails
    def prepare():
      raise OSError(28, 'No space left on device')
    preparation.once('broken/1.0.0', data_dir, lambda: False, prepare)
except (errors.UserError, OSError) as e:
  print('error:', e, flush=True)
  jax.distributed.shutdown()
  sys.exit(2)
jax.distributed.shutdown()
"""


def _free_port():
  with socket.socket() as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]


def _two_processes(mode, data_dir):
  port = _free_port()
  env = {**os.environ, 'JAX_PLATFORMS': 'cpu'}
  # Plain interpreters, as real hosts start them (each with its own string-hash seed).
  procs = [subprocess.Popen([sys.executable, '-c', WORKER, str(port), str(i), mode, data_dir],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True) for i in range(2)]
  try:
    return [(p.wait(timeout=240), p.stdout.read()) for p in procs]
  finally:
    for p in procs:  # only the processes this test started
      if p.poll() is None:
        p.kill()
        p.wait()


@pytest.mark.slow
def test_two_processes_on_an_empty_data_dir_prepare_the_digits_once(tmp_path):
  for trial in range(2):  # repeated, each time from an empty dir
    data_dir = str(tmp_path / f'data{trial}')
    results = _two_processes('digits', data_dir)
    for code, out in results:
      assert code == 0 and 'examples 1347' in out, out[-3000:]
    assert 'downloaded and prepared' in results[0][1]  # process 0 built it
    assert 'downloaded and prepared' not in results[1][1]  # process 1 found it in place


@pytest.mark.slow
def test_a_failure_on_process_0_is_one_line_on_the_others(tmp_path):
  (code0, out0), (code1, out1) = _two_processes('broken', str(tmp_path))
  assert code0 == 2 and 'No space left on device' in out0, out0[-2000:]
  assert code1 == 2, out1[-2000:]
  assert ('error: broken/1.0.0: process 0 could not prepare it in '
          f'{tmp_path}: OSError: [Errno 28] No space left on device') in out1


class _SilentStore:
  def get(self, key, timeout_s):
    raise TimeoutError(f'DEADLINE_EXCEEDED waiting for {key}')


def test_a_wait_past_the_bound_is_one_line(monkeypatch, tmp_path):
  monkeypatch.setattr(preparation.jax, 'process_count', lambda: 2)
  monkeypatch.setattr(preparation.jax, 'process_index', lambda: 1)
  prepared = []
  with pytest.raises(errors.UserError, match=r'^digits/32px/1.0.0: process 0 had not prepared it '
                     rf'in {tmp_path} after 5 s'):
    preparation.once('digits/32px/1.0.0', str(tmp_path), lambda: False,
                     lambda: prepared.append(1), wait_s=5, store=_SilentStore())
  assert not prepared


def test_one_process_prepares_under_the_lock_only_when_missing(tmp_path):
  calls = []
  state = {'ready': False}

  def prepare():
    calls.append(1)
    state['ready'] = True
  for _ in range(2):
    preparation.once('x/1.0.0', str(tmp_path), lambda: state['ready'], prepare)
  assert calls == [1]
  assert os.listdir(tmp_path) == ['.prepare.x_1.0.0.lock']


class _DictStore:
  def __init__(self):
    self.values = {}

  def set(self, key, value):
    self.values[key] = value

  def get(self, key, timeout_s):
    del timeout_s
    return self.values[key]


def test_an_image_folder_is_decode_checked_by_process_0_only(monkeypatch, tmp_path):
  """Process 0 decodes every file; process 1 takes its verdict and decodes none; both drop the
  same broken file. A host whose copy of the folder differs is one line."""
  write_image_folder(tmp_path, {'': {'cat': 4, 'dog': 4}})
  broken = tmp_path / 'dog' / 'broken.png'
  broken.write_bytes(b'not an image')
  store, decoded = _DictStore(), []
  real_check = folders.check_decodable
  monkeypatch.setattr(folders, 'check_decodable',
                      lambda files: decoded.append(len(files)) or real_check(files))
  monkeypatch.setattr(preparation.runtime_api, 'KeyValueStore', lambda: store)
  monkeypatch.setattr(preparation.jax, 'process_count', lambda: 2)
  kept = {}
  for index in (0, 1):
    monkeypatch.setattr(preparation.jax, 'process_index', lambda index=index: index)
    split = folders.drop_undecodable(folders.read_split(str(tmp_path), 'train'), strict=False)
    kept[index] = (split.files, split.skipped)
  assert decoded == [len(kept[0][0]) + 1]  # process 0 only, every file
  assert kept[0] == kept[1] and kept[0][1] == [str(broken)]
  os.remove(broken)
  with pytest.raises(errors.UserError, match=r'holds \d+ images on process 1 but \d+ on process 0'):
    folders.drop_undecodable(folders.read_split(str(tmp_path), 'train'), strict=False)
