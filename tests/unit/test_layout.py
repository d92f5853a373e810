"""The tree shows the architecture and the stage graph knows its code: techniques never reach for
artifacts, stages or orchestration; no module imports itself back; every stage's DVC deps name
exactly the library modules it imports (so editing orchestration never retrains a model); every
default lives once (the schema's defaults are params.yaml, key by key)."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

from slimline.config.params import Params
from tests.conftest import ROOT

PACKAGES = ("slimline", "stages")


def module_file(name: str) -> Path | None:
    base = ROOT.joinpath(*name.split("."))
    if base.with_suffix(".py").is_file():
        return base.with_suffix(".py")
    return base / "__init__.py" if (base / "__init__.py").is_file() else None


def imports_of(path: Path) -> set[Path]:
    """The project modules a file imports, at any depth of the file (imports inside functions
    run too, just later)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
        else:
            continue
        found |= {module_file(name) for name in names if name.split(".")[0] in PACKAGES}
    return found - {None}


def closure(start: Path) -> set[Path]:
    seen, todo = set(), [start]
    while todo:
        path = todo.pop()
        if path not in seen:
            seen.add(path)
            todo.extend(imports_of(path))
    return seen


def relative(paths) -> set[str]:
    return {str(path.relative_to(ROOT)) for path in paths}


def library_files(folder: str) -> set[str]:
    return relative(path for path in (ROOT / folder).rglob("*.py"))


def test_package_init_files_hold_only_their_docstring():
    """A package's __init__ runs on every import of it: it must not pull anything in."""
    for init in (ROOT / "slimline").rglob("__init__.py"):
        body = ast.parse(init.read_text()).body
        assert isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant), init
        assert all(isinstance(node, ast.Assign) for node in body[1:]), init  # __version__ only


@pytest.mark.parametrize("layer, forbidden", [
    ("slimline/techniques", ("slimline/artifact", "slimline/stage.py", "slimline/nightly",
                             "slimline/report", "slimline/search.py", "stages")),
    ("slimline/config", ("slimline/artifact", "slimline/measure", "slimline/models",
                         "slimline/techniques", "slimline/training", "slimline/nightly", "stages")),
    ("slimline/measure", ("slimline/techniques", "slimline/report", "slimline/nightly", "stages")),
    ("slimline/nightly", ("slimline/techniques", "slimline/training", "slimline/models", "stages")),
])
def test_imports_point_down_the_layers(layer, forbidden):
    for path in (ROOT / layer).rglob("*.py"):
        reached = relative(imports_of(path))
        assert not [name for name in reached if name.startswith(forbidden)], path


def test_no_module_imports_itself_back():
    for path in (ROOT / "slimline").rglob("*.py"):
        for imported in imports_of(path):
            if imported.name != "__init__.py" and imported != path:
                assert path not in closure(imported), f"{path} <-> {imported}"


def dvc_stages() -> dict:
    return yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]


@pytest.mark.parametrize("stage", list(dvc_stages()))
def test_each_stage_depends_on_exactly_the_code_it_imports(stage):
    code = [dep for dep in dvc_stages()[stage]["deps"] if dep.startswith(PACKAGES)]
    imported = {name for name in relative(closure(ROOT / "stages" / f"{stage}.py"))
                if not name.endswith("__init__.py")}
    covered = set()
    for dep in code:
        files = library_files(dep) if (ROOT / dep).is_dir() else {dep}
        files = {name for name in files if not name.endswith("__init__.py")}
        assert files, f"{stage}: dep {dep} holds no module"
        # a folder stands for its modules only when the stage imports every one of them
        assert files <= imported, f"{stage}: dep {dep} names code the stage never imports: " \
                                  f"{sorted(files - imported)}"
        covered |= files
    assert imported <= covered, (
        f"{stage}: imports code its deps do not name: {sorted(imported - covered)}"
    )
    assert not [dep for dep in code if dep.startswith(("slimline/nightly", "slimline/search"))]


def flat(mapping: dict, prefix: str = "") -> dict:
    leaves = {}
    for key, value in mapping.items():
        if isinstance(value, dict) and key not in ("factory_args", "ranks"):
            leaves.update(flat(value, f"{prefix}{key}."))
        else:
            leaves[f"{prefix}{key}"] = value
    return leaves


def test_params_yaml_holds_every_schema_key_at_the_schemas_default():
    """One source of truth: a params file that leaves a key out gets exactly what params.yaml
    says, and params.yaml names every knob (the gate's included)."""
    shipped = flat(yaml.safe_load((ROOT / "params.yaml").read_text()))
    defaults = flat(Params().model_dump())
    assert sorted(shipped) == sorted(defaults)
    assert {key: shipped[key] for key in shipped if shipped[key] != defaults[key]} == {}


def test_a_partial_training_section_keeps_that_sections_own_defaults():
    params = Params.model_validate({"prune": {"finetune": {"epochs": 3}},
                                    "distill": {"train": {"batch_size": 32}}})
    assert params.prune.finetune.learning_rate == Params().prune.finetune.learning_rate == 0.05
    assert params.distill.train.epochs == Params().distill.train.epochs == 6
