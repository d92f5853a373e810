"""A real local Airflow deployment of the nightly line (`bash scripts/airflow.sh up|down|status`,
i.e. `python -m slimline.nightly.deployment`): the metadata database on PostgreSQL, the
CeleryExecutor with Redis as broker, the scheduler, the dag-processor, the api-server (the UI, on
127.0.0.1) and Celery workers with distinct hostnames, plus the embedded SeaweedFS.

  settings    the deployment's folder, ports and knobs (SLIMLINE_AIRFLOW_* variables)
  processes   start a process in a session of its own, record it, stop it by session
  credentials passwords and keys, generated once into owner-only files, never printed
  postgres    a private PostgreSQL cluster (initdb, role, start, stop)
  broker      a private Redis, loopback only, password required
  environment the environment its processes start in, recorded at the first `up`
  components  Airflow's processes: their environment, commands, readiness
  celery_config Airflow's Celery settings, and pool processes that die with their worker
  hostname    the hostname_callable that tells workers on one machine apart
  airflow_cli `cli ...`: an airflow command against it, a traceback cut to its final line

Its AIRFLOW_HOME holds the cluster policy that checks a run's conf before the run is created
(slimline/nightly/policy.py).
"""
