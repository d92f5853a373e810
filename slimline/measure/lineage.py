"""Where every number came from: code, params, data, packages, machine."""
from __future__ import annotations

import hashlib
import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path

PACKAGES = ("slimline", "torch", "onnxruntime", "onnx", "numpy", "torch-pruning", "tensorly", "dvc",
            "transformers", "tokenizers")
INT8_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8", "amx_tile")


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def code_revision(directory: str | Path = ".") -> str:
    """The git commit, with '+dirty' when tracked files differ from it; 'unknown' outside git."""
    def git(*args):
        return subprocess.run(["git", *args], cwd=directory, capture_output=True, text=True,
                              timeout=10)
    try:
        head = git("rev-parse", "HEAD")
        if head.returncode != 0:
            return "unknown"
        # dvc.lock and metrics are rewritten by every run: they do not make the code dirty.
        dirty = git("status", "--porcelain", "--untracked-files=no", "--", ".",
                    ":!dvc.lock", ":!metrics").stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return head.stdout.strip() + ("+dirty" if dirty else "")


def cpu_info() -> dict:
    model, flags = platform.processor() or "unknown", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                model = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
    except OSError:
        pass
    return {"model": model, "logical_cores": os.cpu_count(),
            "int8_flags": [flag for flag in INT8_FLAGS if flag in flags]}


def package_versions() -> dict:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def lineage(*, params_file: Path, data_files: dict[str, Path], seed: int, threads: int) -> dict:
    return {
        "code_revision": code_revision(),
        "params_sha256": sha256_file(params_file),
        "data_sha256": {name: sha256_file(path) for name, path in sorted(data_files.items())},
        "packages": package_versions(),
        "cpu": cpu_info(),
        "threads": threads,
        "seed": seed,
    }


def flatten(data: dict, prefix: str = "lineage") -> dict:
    """`{"cpu": {"model": m}}` -> `{"lineage.cpu.model": m}`: the flat keys a metrics file holds."""
    flat = {}
    for key, value in data.items():
        name = f"{prefix}.{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, name))
        else:
            flat[name] = ", ".join(map(str, value)) if isinstance(value, list) else value
    return flat
