"""Every fault and bad input of docs/reliability.md, tried N times; prints the table from real runs.

    python bench/faults.py [--repeat 3] [--out /tmp/slimline-faults] [--only soak "disk full" ...]
    python bench/faults.py --junit RUN.xml [RUN.xml ...]     # the table of pytest runs made already

Each repetition runs all the fault tests in ONE pytest process (so each module starts its own
SeaweedFS, project and Airflow database, as CI does), reads every test's outcome from pytest's
JUnit XML, and adds it to its row. A row counts tries (a parametrized test counts each case; the
soak counts nights), how many were survived (the test passed: the fault was met with the
documented behaviour) and whether data was lost (each of these tests asserts that nothing
published was touched, no partial file is left, or every night still pulls: a pass means none).
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
import xml.etree.ElementTree as ElementTree
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOAK_NIGHTS = 10  # the longer soak: tests/nightly/test_soak.py reads SLIMLINE_SOAK_NIGHTS


@dataclass(frozen=True)
class Row:
    fault: str
    tests: tuple[str, ...]     # node ids (file::name, a trailing * matches parametrized cases)
    unit: str = "run"          # what one try is
    per_pass: int = 1          # tries one passing test stands for (the soak: its nights)


ROWS = [
    Row(
        "stage SIGKILLed mid-write; re-run recovers",
        (
            "tests/stages/test_atomic.py::test_sigkill_*",
            "tests/stages/test_atomic.py::test_failure_inside_the_write_leaves_nothing",
        ),
    ),
    Row(
        "disk full while writing an artifact (1 MiB tmpfs)",
        (
            "tests/stages/test_atomic.py::test_disk_full_during_a_stage_is_one_clear_line_and_no_partial_output",
            "tests/stages/test_atomic.py::test_write_json_on_a_full_disk",
        ),
    ),
    Row(
        "S3 endpoint SIGKILLed before publish, stays down",
        (
            "tests/nightly/test_reliability.py::test_storage_killed_before_publish_fails_in_one_line_and_tags_nothing",
            "tests/nightly/test_reliability.py::test_the_previous_night_survives_a_storage_crash_and_pulls_in_a_fresh_clone",
        ),
    ),
    Row(
        "S3 endpoint down, back within the retries",
        (
            "tests/nightly/test_reliability.py::test_storage_back_within_the_retries_the_retried_publish_lands",
        ),
    ),
    Row(
        "S3 endpoint refusing connections during a stage",
        (
            "tests/nightly/test_reliability.py::test_a_refused_connection_during_a_stage_is_retried_then_fails_in_one_line",
        ),
    ),
    Row(
        "wrong / missing S3 credentials (env, Airflow connection)",
        (
            "tests/nightly/test_reliability.py::test_credential_failures_name_the_setting_and_never_the_secret*",
            "tests/nightly/test_reliability.py::test_an_undefined_or_wrong_airflow_connection_fails_setup_naming_it",
            "tests/nightly/test_nightly.py::test_wrong_credentials_fail_the_run_before_any_work",
        ),
        "case",
    ),
    Row(
        "Celery worker SIGKILLed while its task trains (real deployment, 2 workers)",
        ("tests/deployment/test_deployment.py::"
         "test_a_worker_killed_while_training_is_replaced_by_a_retry_on_the_other_worker",),
    ),
    Row(
        "read-only key: push refused",
        ("tests/nightly/test_nightly.py::test_refused_push_fails_the_run_and_tags_nothing",),
    ),
    Row(
        "two DAG runs at the same time",
        ("tests/nightly/test_nightly.py::test_two_runs_started_together_keep_their_own_artifacts",),
    ),
    Row(
        "night re-run, same inputs, recomputed",
        ("tests/line/test_rerun.py::test_a_forced_rerun_reproduces_every_model_byte_for_byte",),
    ),
    Row(
        "soak: micro nights back to back, each tagged, each pulls as shipped",
        ("tests/nightly/test_soak.py::test_every_tagged_night_pulls_in_a_fresh_clone_as_it_shipped",),
        "night",
        SOAK_NIGHTS,
    ),
    Row(
        "bucket audit after the soak: nothing missing, nothing orphaned",
        (
            "tests/nightly/test_soak.py::test_the_bucket_holds_no_*",
            "tests/nightly/test_soak.py::test_the_audit_sees_*",
        ),
    ),
    Row(
        "secret in logs, reports, metrics, dvc.lock, git, task logs, bucket",
        (
            "tests/nightly/test_reliability.py::test_the_secret_appears_in_no_log_report_metric_lock_git_object_or_bucket_object",
            "tests/nightly/test_nightly.py::test_credentials_never_reach_git_logs_or_reports",
        ),
    ),
    Row(
        "truncated checkpoint",
        ("tests/unit/test_artifact.py::test_truncated_weights_are_one_clear_error",),
    ),
    Row(
        "pickle that runs a command when loaded",
        ("tests/unit/test_artifact.py::test_pickle_checkpoint_is_refused_and_never_run",),
    ),
    Row(
        "file named .onnx that is not ONNX",
        ("tests/stages/test_bad_input.py::test_file_named_onnx_that_is_not_onnx",),
    ),
    Row(
        "ONNX model with no outputs",
        ("tests/stages/test_bad_input.py::test_onnx_model_with_no_outputs",),
    ),
    Row(
        "params: unknown key / wrong type / out of range",
        (
            "tests/unit/test_params.py::test_bad_values_name_key_value_and_rule*",
            "tests/stages/test_params.py::test_stage_stops_with_one_line_and_exit_2",
        ),
        "case",
    ),
    Row(
        "data set missing / empty / NaN",
        (
            "tests/stages/test_bad_input.py::test_missing_data_path",
            "tests/stages/test_bad_input.py::test_nan_and_empty_data",
        ),
    ),
    Row(
        "labels outside the class range",
        ("tests/stages/test_bad_input.py::test_labels_outside_class_range",),
    ),
    Row(
        "calibration split of zero samples",
        ("tests/stages/test_bad_input.py::test_calibration_split_of_zero_samples",),
    ),
    Row(
        "DAG run.conf value of the wrong type",
        (
            "tests/nightly/test_reliability.py::test_a_run_conf_value_of_the_wrong_type_stops_the_run_before_any_stage*",
            "tests/nightly/test_dag.py::test_a_bad_override_fails_the_run_at_setup_before_any_work",
        ),
        "case",
    ),
    Row(
        "run conf naming code, a file or a source, or a profile outside profiles/, or with a key "
        "outside the DAG's params (untrusted)",
        (
            "tests/unit/test_overrides.py::test_the_check_refuses_each_class_in_one_line_naming_the_key*",
            "tests/unit/test_overrides.py::test_a_conf_takes_the_dags_params_only_and_says_where_overrides_go",
            "tests/nightly/test_trigger.py::test_the_dags_setup_task_refuses_every_class_before_any_work",
            "tests/nightly/test_trigger.py::test_airflow_dags_test_refuses_a_bad_conf_in_one_line_before_the_run_exists",
            "tests/nightly/test_trigger.py::test_nightly_sh_refuses_in_one_line_with_exit_2",
        ),
        "case",
    ),
    Row(
        "params path or a link in a data folder leading outside the project",
        (
            "tests/stages/test_untrusted_files.py::test_a_params_path_climbing_out_of_the_project_is_refused",
            "tests/stages/test_untrusted_files.py::test_a_symlinked_data_folder_pointing_outside_is_refused",
            "tests/stages/test_untrusted_files.py::test_a_link_inside_an_image_folder_pointing_outside_is_refused",
        ),
        "case",
    ),
    Row(
        "Hugging Face folder whose only weights are a pickle that runs a command",
        ("tests/stages/test_untrusted_files.py::test_a_hugging_face_folder_with_only_a_pickled_bin_is_refused_and_never_run",),
    ),
]


def _matches(pattern: str, node: str) -> bool:
    return node.startswith(pattern[:-1]) if pattern.endswith("*") else node == pattern


def pytest_command(pattern: str) -> str:
    """The command that runs the tests a row pattern names (`*`: by name prefix, with -k)."""
    file, _, name = pattern.partition("::")
    if not name.endswith("*"):
        return f"pytest {pattern}"
    return f"pytest {file} -k {name[:-1]}" if name[:-1] else f"pytest {file}"


def files_of(rows: list[Row]) -> list[str]:
    return sorted({test.split("::")[0] for row in rows for test in row.tests})


def run_once(files: list[str], junit: Path) -> dict[str, bool]:
    """One pytest process over the files; {node id: passed}."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "SLIMLINE_SOAK_NIGHTS": str(SOAK_NIGHTS)}
    subprocess.run([sys.executable, "-m", "pytest", *files, "-q", "-p", "no:cacheprovider",
                    f"--junitxml={junit}"], cwd=ROOT, env=env)
    return outcomes_of(junit)


def outcomes_of(junit: Path) -> dict[str, bool]:
    """{node id: passed} from a pytest JUnit XML file."""
    outcomes = {}
    for case in ElementTree.parse(junit).iter("testcase"):
        node = case.get("classname").replace(".", "/") + ".py::" + case.get("name")
        outcomes[node] = not any(child.tag in {"failure", "error", "skipped"} for child in case)
    return outcomes


def table(rows: list[Row], runs: list[dict[str, bool]]) -> str:
    lines = ["| fault or bad input | tries | survived | data lost | reproduce with |",
             "|---|---:|---:|---|---|"]
    for row in rows:
        tries = survived = 0
        for outcomes in runs:
            for node, passed in outcomes.items():
                if any(_matches(pattern, node) for pattern in row.tests):
                    tries += row.per_pass
                    survived += row.per_pass if passed else 0
        lost = (
            "none" if tries and survived == tries else ("not run" if not tries else "see failures")
        )
        command = "<br>".join(f"`{pytest_command(pattern)}`" for pattern in row.tests)
        lines.append(f"| {row.fault} | {tries} {row.unit}{'s' if tries != 1 else ''} | "
                     f"{survived} | {lost} | {command} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("/tmp/slimline-faults"))
    parser.add_argument("--only", nargs="+", help="rows whose fault contains one of these texts")
    parser.add_argument("--junit", type=Path, nargs="+", help="count these runs instead of running")
    args = parser.parse_args()
    rows = [row for row in ROWS if not args.only or any(text in row.fault for text in args.only)]
    if args.junit:
        runs = [outcomes_of(path) for path in args.junit]
        print(table(rows, runs))
        return
    args.out.mkdir(parents=True, exist_ok=True)
    runs, started = [], time.monotonic()
    for repetition in range(args.repeat):
        runs.append(run_once(files_of(rows), args.out / f"run-{repetition}.xml"))
        print(f"faults: repetition {repetition + 1}/{args.repeat} done "
              f"({time.monotonic() - started:.0f} s so far)", flush=True)
    print(table(rows, runs))
    tally = defaultdict(int)
    for outcomes in runs:
        for passed in outcomes.values():
            tally[passed] += 1
    print(f"\n{args.repeat} repetition(s), {tally[True]} test runs passed, {tally[False]} failed, "
          f"{time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
