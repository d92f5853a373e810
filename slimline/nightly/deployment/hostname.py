"""Airflow's [core] hostname_callable for a deployment with several workers on one machine.

A task instance records the hostname its task process reports, by default the machine's FQDN,
which every worker on one machine shares. Each worker of scripts/airflow.sh is started with
AIRFLOW_WORKER_HOSTNAME (worker1, worker2, ...), inherited by its task processes; every other
process, and workers on machines of their own, report the FQDN as before.
"""
from __future__ import annotations

import os
import socket


def worker_hostname() -> str:
    return os.environ.get("AIRFLOW_WORKER_HOSTNAME") or socket.getfqdn()
