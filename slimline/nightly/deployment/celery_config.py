"""The Celery configuration of the deployment's workers: Airflow's own, and one rule more.

A Celery pool process (it runs Airflow's task supervisor, which runs the task) lives on when its
worker's main process is killed: the deployment's tests saw one left until the next `up`. Each
pool process asks for SIGKILL when the main process dies; its task's runner, left without its
supervisor, then ends its stage itself (slimline/nightly/lifeline.py).
`[celery] celery_config_options` names CELERY_CONFIG (components.environment sets it).
"""
from __future__ import annotations

import os
import signal

from airflow.providers.celery.executors.default_celery import DEFAULT_CELERY_CONFIG
from celery.signals import worker_process_init

from slimline.nightly.lifeline import signal_when_parent_dies

CELERY_CONFIG = DEFAULT_CELERY_CONFIG


@worker_process_init.connect
def _end_with_the_worker(**_) -> None:
    parent = os.getppid()
    if not signal_when_parent_dies(signal.SIGKILL) and os.getppid() != parent:
        os._exit(1)  # the main process died while this one started
