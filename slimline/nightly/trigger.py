"""A DAG run's trigger input, checked before any work (docs/reliability.md, "Threat model").

Whoever triggers a run (the Airflow UI form, the REST API, `airflow dags trigger --conf`,
scripts/nightly.sh's JSON) is not trusted. Their conf is checked here against the revision the run
builds: its top-level keys against the DAG's params (`overrides`, and the search DAG's own), the
overrides against the allow-list (slimline/nightly/overrides.py) and the params.yaml and profiles/
of that revision; the search DAG's `target` and `write_profile` as bare profile names; its numbers
as numbers. The cluster policy (slimline/nightly/policy.py) checks the keys and the overrides
before a run is created (the search DAG's own params are checked there by their Param schemas);
setup_workspace checks everything again, for an Airflow that has no such policy installed.

    python -m slimline.nightly.trigger '{"prune.keep_ratio": 0.3}'   # exit 2, one line if refused
"""
from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

from slimline.config.profiles import PROFILE_NAME
from slimline.errors import SlimlineError
from slimline.nightly.bounds import check_bound
from slimline.nightly.commands import run_quiet
from slimline.nightly.overrides import SOURCE, check_target, merge_overrides

PROFILES = "profiles"


def check_conf_keys(conf: dict, accepted) -> None:
    """A conf takes the DAG's params and nothing else: Airflow itself accepts any key, and a bare
    override key would be ignored, so the default night would run in place of the one asked for."""
    for key in conf:
        if key not in accepted:
            others = [name for name in accepted if name != "overrides"]
            takes = f"the conf takes {', '.join(others)} and overrides; " if others else ""
            raise SlimlineError(f"conf key {key!r} is not accepted: {takes}put overrides under "
                                '{"overrides": {...}}')


def revision_profiles(repo: Path, revision: str) -> dict[str, str]:
    """Profile name -> YAML text of the profiles committed at `revision`."""
    listing = run_quiet(["git", "ls-tree", "--name-only", revision, "--", f"{PROFILES}/"], repo,
                        what="listing the revision's profiles")
    names = [Path(line).stem for line in listing.splitlines() if line.endswith(".yaml")]
    return {name: run_quiet(["git", "show", f"{revision}:{PROFILES}/{name}.yaml"], repo,
                            what=f"reading profile {name}") for name in names}


def params_with_overrides(repo: Path, revision: str, overrides: dict | None) -> dict:
    """The revision's params.yaml with the trigger's overrides merged in, allowed and validated
    against that revision's profiles (SlimlineError if not)."""
    import yaml

    text = run_quiet(["git", "show", f"{revision}:params.yaml"], repo, what="reading params.yaml")
    with tempfile.TemporaryDirectory(prefix="slimline-profiles-") as folder:
        for name, profile in revision_profiles(repo, revision).items():
            (Path(folder) / f"{name}.yaml").write_text(profile)
        return merge_overrides(yaml.safe_load(text) or {}, overrides, Path(folder))


def check_search(repo: Path, revision: str, settings: dict) -> None:
    """The search DAG's own params: target and write_profile bare names, positive numbers."""
    check_target(settings.get("target"), sorted(revision_profiles(repo, revision)))
    if settings.get("target") is None:
        raise SlimlineError(
            f"{SOURCE}: target is required: the profile whose budgets the search meets"
        )
    name = settings.get("write_profile")
    if name is not None and (not isinstance(name, str) or not PROFILE_NAME.match(name)):
        raise SlimlineError(f"{SOURCE}: write_profile = {name!r} is refused: a bare profile name "
                            "(letters, digits, '_' and '-'), never a path")
    for key, kind in (("minutes", (int, float)), ("max_trials", int)):
        value = settings.get(key)
        if isinstance(value, bool) or not isinstance(value, kind) or value <= 0:
            raise SlimlineError(f"{SOURCE}: {key} = {value!r} is refused: a positive number")
        check_bound(SOURCE, key, value)


def _once(pairs: list[tuple[str, object]]) -> dict:
    """A JSON object whose keys are all different (json keeps a repeated key's last value)."""
    keys = [key for key, _ in pairs]
    for key in keys:
        if keys.count(key) > 1:
            raise SlimlineError(f"{SOURCE}: {key} is given twice (dotted and nested, or "
                                "repeated): give each knob once")
    return dict(pairs)


def main(argv: list[str] | None = None) -> int:
    """Check a trigger's overrides (JSON) against the repository's HEAD, as setup_workspace will."""
    from slimline.nightly.workspace import resolve_revision

    argv = sys.argv[1:] if argv is None else argv
    repo = Path(argv[1]) if len(argv) > 1 else Path.cwd()
    try:
        try:
            overrides = json.loads(argv[0] if argv else "{}", object_pairs_hook=_once)
        except json.JSONDecodeError as exc:
            raise SlimlineError(f"{SOURCE}: not valid JSON ({exc})") from None
        params_with_overrides(repo, resolve_revision(repo), overrides)
    except SlimlineError as exc:
        print(f"slimline nightly: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
