"""python -m slimline.nightly.deployment up | down | status | cli <airflow arguments>"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from slimline.errors import SlimlineError
from slimline.nightly.deployment import control, settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bash scripts/airflow.sh",
                                     description=control.__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=["up", "down", "status", "cli"])
    parser.add_argument("arguments", nargs=argparse.REMAINDER,
                        help="cli: the airflow command to run against the deployment")
    args = parser.parse_args(argv)
    deployment = None
    try:
        deployment = settings.from_env(default_repo=Path.cwd())
        if args.action == "up":
            control.up(deployment)
        elif args.action == "down":
            control.down(deployment)
        elif args.action == "status":
            return 0 if control.status(deployment) else 3
        else:
            return control.run_cli(deployment, args.arguments)
    except SlimlineError as exc:
        print(f"deployment: error: {exc}", file=sys.stderr)
        if args.action == "up" and deployment is not None:
            print(f"deployment: {control.after_failed_up(deployment)}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
