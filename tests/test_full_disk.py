"""A checkpoint save that finds the disk full: the run stops with one line naming the path and
the space, the step before restores, the incomplete step is never taken, and the same command
resumes once there is space. The workdir is a small tmpfs this test mounts (and unmounts)."""

import os
import re
import subprocess

import pytest

import runs
from vit_jax.train import checkpointer

pytestmark = pytest.mark.slow
SIZE = '800k'  # the config and two or three of the tiny model's checkpoints: not all five


@pytest.fixture
def small_disk(tmp_path):
  mount_point = tmp_path / 'disk'
  mount_point.mkdir()
  mounted = subprocess.run(['mount', '-t', 'tmpfs', '-o', f'size={SIZE}', 'tmpfs',
                            str(mount_point)], capture_output=True, text=True)
  if mounted.returncode != 0:
    pytest.skip(f'cannot mount a tmpfs here: {mounted.stderr.strip()}')
  try:
    yield mount_point
  finally:
    subprocess.run(['umount', '-l', str(mount_point)], check=False)


def test_a_full_disk_stops_the_run_in_one_line_and_the_step_before_restores(
    small_disk, digits_data_dir):
  workdir = str(small_disk / 'run')
  stopped = runs.launch(workdir, digits_data_dir)
  out = stopped.communicate(timeout=300)[0]
  assert stopped.returncode not in (0, None), out[-3000:]
  # One line of ours; orbax's failing writer threads log their own tracebacks around it.
  ours = [line for line in out.splitlines() if line.startswith('error: ')]
  assert len(ours) == 1, out[-3000:]
  match = re.fullmatch(
      r'error: The checkpoint of step (\d+) could not be written to (\S+): no space left on the '
      r'device \(its arrays alone take [\d.]+ KB, [\d.]+ (bytes|KB) free there\)\. Free space or '
      r'use another --workdir; a restart resumes from step (\d+), and the incomplete step is '
      r'never restored\.', ours[0])
  assert match, out[-3000:]
  failed, resume = int(match.group(1)), int(match.group(4))
  assert match.group(2) == os.path.join(workdir, 'checkpoints') and resume < failed

  ckpt = checkpointer.Checkpointer(workdir)
  try:
    assert ckpt.steps()[-1] == resume  # the incomplete step is not a step
  finally:
    ckpt.close()
  subprocess.run(['mount', '-o', 'remount,size=8m', str(small_disk)], check=True)
  resumed = runs.launch(workdir, digits_data_dir)
  out = resumed.communicate(timeout=300)[0]
  assert resumed.returncode == 0, out[-3000:]
  assert f'Resumed from the checkpoint at step {resume}.' in out
  assert 'Run completed at step 20' in out
  rows = [(row['step'], tuple(sorted(row))) for row in runs.rows(workdir)]
  assert len(rows) == len(set(rows)) and rows[-1][0] == 20  # every row once
  assert [step for step, _ in rows] == sorted(step for step, _ in rows)
