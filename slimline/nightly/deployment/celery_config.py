"""The Celery configuration of the deployment's workers: Airflow's own, and one rule more.

A worker's main process forks its Celery pool processes (each runs Airflow's task supervisor)
and Airflow's helper processes (the stale-bundle cleanup): killed by SIGKILL, it leaves them
running under PID 1 (the deployment's tests saw an `airflow celery worker` process left until
the next `up`). So every process the main process forks asks Linux for SIGKILL when it dies; a
task's runner, left without its supervisor, then ends its stage itself
(slimline/nightly/lifeline.py). `[celery] celery_config_options` names CELERY_CONFIG
(components.environment sets it), which makes the worker import this module before it forks.
"""
from __future__ import annotations

import os
import signal

from airflow.providers.celery.executors.default_celery import DEFAULT_CELERY_CONFIG

from slimline.nightly.lifeline import signal_when_parent_dies

CELERY_CONFIG = DEFAULT_CELERY_CONFIG
WORKER_MAIN = os.getpid()


def _end_with_the_worker() -> None:
    if os.getppid() != WORKER_MAIN:  # a grandchild (a task runner): its supervisor watches it
        return
    if not signal_when_parent_dies(signal.SIGKILL):
        os._exit(1)  # the main process died while this one was being forked


os.register_at_fork(after_in_child=_end_with_the_worker)
