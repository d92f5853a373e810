"""decompose: not built yet; runs as an explicitly disabled pass-through."""
from __future__ import annotations

from pathlib import Path

from slimline.passthrough import pass_through
from slimline.stage import run_stage


def add_arguments(parser):
    parser.add_argument("--input", type=Path, required=True, help="input model artifact folder")
    parser.add_argument("--output", type=Path, required=True, help="output model artifact folder")
    parser.add_argument("--data", type=Path, required=True, help="folder of split .npz files")
    parser.add_argument("--metrics", type=Path, required=True, help="output: metrics JSON")


def main(args, params, log):
    pass_through("decompose", args, log)


if __name__ == "__main__":
    run_stage("decompose", main, add_arguments)
