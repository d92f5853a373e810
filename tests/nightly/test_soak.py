"""Soak: micro nights back to back against one SeaweedFS (5 in the suite; SLIMLINE_SOAK_NIGHTS=10
for the longer soak docs/reliability.md quotes), each through the same task commands the DAG runs
(step per stage, then publish). Something changes on most nights (see `overrides`), so nights mix
computed stages with stages restored from the run cache, as real nights do.

Afterwards every tagged night must pull in a fresh clone, byte for byte what that night shipped,
and the bucket must hold no missing and no orphaned object (slimline.nightly.audit defines both).
"""
from __future__ import annotations

import os
import time

import pytest
import yaml

from slimline.nightly.audit import audit_remote
from slimline.nightly.pipeline import load_pipeline
from tests.helpers.nightly import (
    MICRO,
    git,
    pull_in_fresh_clone,
    pull_tag,
    run_night_direct,
    tags,
    tree_digest,
)

NIGHTS = int(os.environ.get("SLIMLINE_SOAK_NIGHTS", "5"))
SEED_CHANGE = NIGHTS // 2


def overrides(index: int) -> dict:
    """What changes from night to night, cheaply: the seed at night 0 and at SEED_CHANGE (every
    stage runs); the gate's accuracy budget at every even night (evaluate runs again, the rest is
    restored); nothing at the other odd nights (every stage is restored from the run cache)."""
    gate = {**MICRO["evaluate"]["gate"], "max_top1_drop": 100.0 - index // 2}
    return {**MICRO, "seed": seed(index), "evaluate": {**MICRO["evaluate"], "gate": gate}}


def seed(index: int) -> int:
    return 100 if index < SEED_CHANGE else 101


@pytest.fixture(scope="module")
def soak(project, storage):
    nights, seconds = [], []
    for index in range(NIGHTS):
        started = time.monotonic()
        night = run_night_direct(project, storage.settings(), f"soak__{index:02d}",
                                 f"2026-04-{index + 1:02d}", overrides(index))
        seconds.append(time.monotonic() - started)
        assert night.failed_task is None, night.text[-4000:]
        nights.append(night)
    print(f"\nsoak: {NIGHTS} nights in {sum(seconds):.0f} s; per night: "
          + " ".join(f"{s:.0f}" for s in seconds))
    return nights


@pytest.mark.slow
def test_every_night_is_tagged_in_order_and_the_cached_ones_ran_nothing(soak, project):
    assert tags(project) == [f"nightly/2026-04-{i + 1:02d}" for i in range(NIGHTS)]
    history = git("log", "--first-parent", "--format=%H", "nightly", cwd=project).split()
    assert history[:NIGHTS] == [night.published["commit"] for night in reversed(soak)]
    stages = list(load_pipeline(project / "dvc.yaml"))
    for index, night in enumerate(soak):
        lock = yaml.safe_load((night.workspace / "dvc.lock").read_text())
        assert lock["stages"]["prepare"]["params"]["params.yaml"]["seed"] == seed(index)
        logs = [(night.run_dir / "logs" / f"{stage}.log").read_text() for stage in stages]
        reused = {stage: f"stage {stage} reused from the run cache" in log
                  for stage, log in zip(stages, logs)}
        if index in (0, SEED_CHANGE):
            assert not any(reused.values()), (index, reused)
        elif index % 2 == 0:
            assert not reused["evaluate"] and reused["prepare"] and reused["quantize"], (
                index,
                reused,
            )
        else:
            assert all(reused.values()), (index, reused)


@pytest.mark.slow
def test_every_tagged_night_pulls_in_a_fresh_clone_as_it_shipped(soak, project, storage, tmp_path):
    """One clone whose DVC cache starts empty, every tag in turn: each object comes from the
    bucket."""
    clone = pull_in_fresh_clone(project, soak[0].published["tag"], storage, tmp_path / "clone")
    for night in soak:
        pull_tag(clone, night.published["tag"], storage)
        for folder in ("models/quantized", "reports", "data/prepared", "night"):
            assert tree_digest(clone / folder) == tree_digest(night.workspace / folder), (
                night.run_id,
                folder,
            )
        # the report is evaluate's as its step pushed it; the comparison (night/) is publish's,
        # in git
        assert (
            "Compared with the previous night" not in (clone / "reports" / "report.md").read_text()
        )


@pytest.mark.slow
def test_the_bucket_holds_no_missing_and_no_orphaned_object(soak, project, storage):
    audit = audit_remote(project, storage.settings())
    assert audit.tags == tags(project)
    assert audit.clean, (audit.summary(), audit.missing, audit.orphans[:5], audit.strays[:5])
    # a run-cache entry per computation: each stage but evaluate at both seeds, each evaluate
    computed_evaluates = len({(seed(i), i // 2) for i in range(NIGHTS)})
    stages = len(load_pipeline(project / "dvc.yaml"))
    assert audit.run_cache_entries >= 2 * (stages - 1) + computed_evaluates
    print(f"\n{audit.summary()}")


@pytest.mark.slow
def test_the_audit_sees_an_orphan_and_a_missing_object(soak, project, storage):
    """The check above can fail: an object nothing references, and one a night needs, removed."""
    from slimline.nightly.storage import _client

    settings = storage.settings()
    client = _client(settings)
    before = set(audit_remote(project, settings).orphans)
    orphan = f"{settings.prefix}/files/md5/ff/{'0' * 30}"
    client.put_object(Bucket=settings.bucket, Key=orphan, Body=b"nobody needs me")
    lock = yaml.safe_load(git("show", f"{soak[-1].published['tag']}:dvc.lock", cwd=project))
    needed = lock["stages"]["quantize"]["outs"][0]["md5"]
    needed_key = f"{settings.prefix}/files/md5/{needed[:2]}/{needed[2:]}"
    saved = client.get_object(Bucket=settings.bucket, Key=needed_key)["Body"].read()
    client.delete_object(Bucket=settings.bucket, Key=needed_key)
    try:
        audit = audit_remote(project, settings)
        assert set(audit.orphans) - before == {orphan}
        assert list(audit.missing) == [needed]
        assert any(who.endswith(":quantize") for who in audit.missing[needed])
    finally:
        client.put_object(Bucket=settings.bucket, Key=needed_key, Body=saved)
        client.delete_object(Bucket=settings.bucket, Key=orphan)
    after = audit_remote(project, settings)
    assert not after.missing and set(after.orphans) == before
