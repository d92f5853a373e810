"""What the benches that run the whole line share: their work folder, a scratch DVC project of
this checkout, a timed step with its log, a pinned wheel fetched and hash-checked, and the CPU
they measured on (bench/vision.py, bench/transformer.py)."""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
PROJECT_FILES = ("dvc.yaml", "params.yaml", "stages", "slimline", "profiles", ".dvcignore")


def work_folder(path: Path, reuse: bool) -> Path:
    """The bench's folder, emptied unless `reuse`; dvc and the stages' `python` are this
    environment's from here on, also when it is not activated."""
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    if path.exists() and not reuse:
        shutil.rmtree(path)
    path.mkdir(parents=True, exist_ok=True)
    return path


def new_project(folder: Path, params: dict) -> Path:
    """A DVC project of this checkout's pipeline in `folder`, with `params` as its params.yaml
    (files already there are kept: a reused project keeps DVC's cache of its stages)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in PROJECT_FILES:
        source, target = ROOT / name, folder / name
        if not target.exists():
            (shutil.copytree if source.is_dir() else shutil.copy)(source, target)
    (folder / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    if not (folder / ".git").exists():
        subprocess.run(["git", "init", "-q"], cwd=folder, check=True)
        subprocess.run(["git", "-c", "user.name=bench", "-c", "user.email=bench@localhost",
                        "commit", "-q", "--allow-empty", "-m", "bench"], cwd=folder, check=True)
        subprocess.run(["dvc", "init", "-q"], cwd=folder, check=True)
    return folder


def run(command: list[str], cwd: Path, log: Path) -> tuple[float, int]:
    """(seconds, exit code) of a command whose output goes to `log`. A failure is printed, not
    raised: a failed gate (evaluate's exit 2) leaves the models it judged to measure."""
    started = time.perf_counter()
    print(f"$ {' '.join(command)}  (log: {log})", flush=True)
    with open(log, "w") as handle:
        code = subprocess.run(command, cwd=cwd, stdout=handle, stderr=subprocess.STDOUT).returncode
    if code:
        print(f"  exit {code}: see {log}", flush=True)
    return time.perf_counter() - started, code


def pinned_wheel(folder: Path, requirement: str, sha256: str, platform: tuple = ()) -> Path:
    """A pinned wheel, downloaded by pip without its dependencies and never installed (`platform`:
    pip's --python-version / --platform for a binary one), hash-checked. pip is the base
    interpreter's: scripts/setup.sh builds .venv with uv, which has no pip in it."""
    folder.mkdir(parents=True, exist_ok=True)
    name, version = requirement.split("==")
    pattern = f"{name.replace('-', '_')}-{version}-*.whl"
    if not list(folder.glob(pattern)):
        python = getattr(sys, "_base_executable", sys.executable)
        subprocess.run([python, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary",
                        ":all:", *platform, "-d", str(folder), requirement], check=True)
    wheel = next(iter(folder.glob(pattern)))
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    if digest != sha256:
        raise SystemExit(f"{wheel}: sha256 {digest} is not the pinned {sha256}")
    return wheel


def cpu_description() -> str:
    from slimline.techniques.quantize import cpu_int8_features

    model = next((line.split(":", 1)[1].strip() for line in
                  Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), "unknown CPU")
    flags = ", ".join(sorted(cpu_int8_features())) or "none (no VNNI, no AMX)"
    return f"{model}, {os.cpu_count()} logical cores, int8 flags: {flags}"
