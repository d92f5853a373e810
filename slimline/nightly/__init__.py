"""Nightly orchestration: the code behind dags/slimline_nightly.py.

The DAG file only wires tasks; everything it runs lives here, in small modules:

  pipeline   dvc.yaml -> the stage graph (which stage needs which)
  overrides  run-time params overrides, validated like params.yaml: one reading of a conf
  bounds     how far a trigger may turn each knob (SLIMLINE_OVERRIDES_BOUNDS)
  storage    the S3 remote: settings from the environment, DVC remote config, access check
  seaweed    the embedded SeaweedFS server (loopback, credentials required)
  workspace  one git worktree per run, so two runs never share a DVC lock
  runner     how a stage step is executed: `local` (subprocess), `docker` (docker_runner:
             DockerOperator), `kubernetes` (kubernetes_runner: KubernetesPodOperator); the
             container runners' settings in containers
  lifeline   the processes a task's try lives by; the local runner ends its command when one dies
  fence      which try of a task is current: a retry ends the earlier one, a written-off try
             never pushes
  step       what a runner executes for one stage: pull deps -> dvc repro -> push outs
  publish    gate check, push, commit lock + metrics to the versioning branch, tag the night
  tasks      the Airflow task callables (the only module that imports Airflow)
  summary    where a run's results are, or which task failed and why
  deployment a real local Airflow deployment to run the DAG under (scripts/airflow.sh)

Nothing here imports torch: the scheduler parses the DAG file often and must stay light.
"""
