"""Atomic writes: a killed or failed write leaves no partial artifact, and a re-run recovers."""
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from slimline.artifact.atomic import atomic_dir, write_json

WRITER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from slimline.artifact.atomic import atomic_dir
    with atomic_dir(Path(sys.argv[1])) as tmp:
        (tmp / "weights.bin").write_bytes(b"x" * 1_000_000)
        Path(sys.argv[2]).touch()          # tell the test we are mid-write
        time.sleep(60)
        (tmp / "recipe.json").write_text("{}")
""")


def kill_mid_write(target: Path, tmp_path: Path) -> None:
    ready = tmp_path / "ready"
    process = subprocess.Popen([sys.executable, "-c", WRITER, str(target), str(ready)])
    deadline = time.time() + 60
    while not ready.exists():
        assert time.time() < deadline and process.poll() is None
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()


def test_sigkill_mid_write_leaves_no_artifact_and_rerun_cleans_up(tmp_path):
    target = tmp_path / "models" / "pruned"
    kill_mid_write(target, tmp_path)
    assert not target.exists()
    assert [p.name for p in target.parent.iterdir()][0].startswith(".pruned.tmp-")
    with atomic_dir(target) as tmp:
        (tmp / "recipe.json").write_text("{}")
    assert sorted(p.name for p in target.parent.iterdir()) == ["pruned"]
    assert (target / "recipe.json").read_text() == "{}"


def test_sigkill_while_replacing_keeps_the_previous_artifact(tmp_path):
    target = tmp_path / "models" / "teacher"
    with atomic_dir(target) as tmp:
        (tmp / "recipe.json").write_text("previous")
    kill_mid_write(target, tmp_path)
    assert (target / "recipe.json").read_text() == "previous"
    assert not (target / "weights.bin").exists()


def test_failure_inside_the_write_leaves_nothing(tmp_path):
    target = tmp_path / "out"
    with pytest.raises(RuntimeError):
        with atomic_dir(target) as tmp:
            (tmp / "half").write_text("x")
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


@pytest.fixture()
def tiny_disk(tmp_path):
    """A 1 MiB tmpfs: a real 'no space left on device' (needs root, as in CI)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)],
                            capture_output=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", str(mount)], check=False)


def fill(disk: Path, leave: int) -> None:
    """Fill the tmpfs until only about `leave` bytes are free."""
    free = shutil.disk_usage(disk).free
    (disk / "filler").write_bytes(b"\0" * max(free - leave, 0))


def test_disk_full_during_a_stage_is_one_clear_line_and_no_partial_output(tiny_disk, tiny_teacher):
    fill(tiny_disk, leave=20_000)  # the report's plots alone need more than this
    result = subprocess.run(
        [sys.executable, "-m", "stages.evaluate", "--params", str(tiny_teacher / "params.yaml"),
         "--data", str(tiny_teacher / "data"), "--model", f"teacher={tiny_teacher / 'teacher'}",
         "--report", str(tiny_disk / "reports"), "--metrics", str(tiny_disk / "evaluate.json")],
        cwd=Path(__file__).resolve().parents[2], capture_output=True, text=True, timeout=600)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "no space left on device" in lines[0]
    assert sorted(p.name for p in tiny_disk.iterdir()) == ["filler"]


def test_write_json_on_a_full_disk(tiny_disk):
    fill(tiny_disk, leave=0)
    with pytest.raises(OSError) as error:
        write_json(tiny_disk / "metrics.json", {"x": "y" * 100_000})
    assert error.value.errno == 28  # ENOSPC
    assert sorted(p.name for p in tiny_disk.iterdir()) == ["filler"]
