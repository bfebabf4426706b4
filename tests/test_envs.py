"""The pinned software: envs/*.yaml (what `--sdm conda` builds), requirements.txt (pip) and pyproject agree.

Snakemake copies each env file to `.snakemake/conda/<hash>.yaml` before `conda env create`, so a relative
path inside one (`-e ..`, `file:`, `./pkg`) resolves against that copy and the build fails. The envs
therefore hold only pinned packages from the registries; the workflow's own package reaches the rule
scripts through the Snakefile (it puts `src/` on `sys.path`, which Snakemake's script preamble hands
to every script) and through `PYTHONPATH` for the torchrun children of `sarm.rm.launch`.
"""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

from .conftest import REPO

ENV_FILES = sorted((REPO / "envs").glob("*.yaml"))
PIN = re.compile(r"^([A-Za-z0-9_.-]+)==([A-Za-z0-9_.+-]+)$")
CONDA_PIN = re.compile(r"^([A-Za-z0-9_.-]+)=([0-9][A-Za-z0-9_.*-]*)$")
# Part of the workflow, not of a rule's environment: the DAG and the script preamble come from the
# Snakemake that runs the workflow.
NOT_IN_ENVS = {"snakemake", "snakemake-executor-plugin-slurm"}


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_pins() -> dict[str, str]:
    pins = {}
    for line in (REPO / "requirements.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            match = PIN.match(line)
            assert match, f"requirements.txt: {line!r} is not pinned as name==version"
            pins[normalize(match.group(1))] = match.group(2)
    return pins


def env_sections(path: Path) -> tuple[list[str], list[str]]:
    """(conda packages, pip packages) of an env file."""
    env = yaml.safe_load(path.read_text())
    conda = [item for item in env["dependencies"] if isinstance(item, str)]
    pip = [entry for item in env["dependencies"] if isinstance(item, dict) for entry in item.get("pip", [])]
    return conda, pip


def env_pins(path: Path) -> dict[str, str]:
    return {normalize(PIN.match(line).group(1)): PIN.match(line).group(2) for line in env_sections(path)[1]}


@pytest.mark.parametrize("path", ENV_FILES, ids=lambda p: p.name)
def test_env_file_is_deployable_by_snakemake(path):
    """Only registry packages, each pinned: nothing that names a path relative to the env file."""
    env = yaml.safe_load(path.read_text())
    assert set(env) <= {"name", "channels", "dependencies"}, f"{path.name}: unexpected keys {sorted(env)}"
    assert "defaults" not in env.get("channels", []), (
        f"{path.name}: the anaconda defaults channel needs a licence"
    )
    conda, pip = env_sections(path)
    for entry in conda:
        assert CONDA_PIN.match(entry), f"{path.name}: conda package {entry!r} is not pinned as name=version"
    for entry in pip:
        assert not entry.startswith("-"), (
            f"{path.name}: pip option {entry!r} (e.g. -e ..) breaks the env build"
        )
        assert "/" not in entry and ":" not in entry, (
            f"{path.name}: {entry!r} is a path or URL, not a package"
        )
        assert PIN.match(entry), f"{path.name}: pip package {entry!r} is not pinned as name==version"
    assert any(entry.startswith("python=") for entry in conda), f"{path.name} does not pin python"


@pytest.mark.parametrize("path", ENV_FILES, ids=lambda p: p.name)
def test_env_pins_equal_requirements_txt(path):
    pins = requirement_pins()
    disagreeing = {name: (v, pins.get(name)) for name, v in env_pins(path).items() if pins.get(name) != v}
    assert not disagreeing, f"{path.name} disagrees with requirements.txt (env, pip): {disagreeing}"


def test_env_python_is_the_one_pyproject_requires():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    minimum = re.match(r">=\s*3\.(\d+)", project["requires-python"])
    assert minimum and int(minimum.group(1)) >= 11, "numpy/pandas pins need Python >= 3.11"
    for path in ENV_FILES:
        (python,) = [entry for entry in env_sections(path)[0] if entry.startswith("python=")]
        assert int(python.split("=")[1].split(".")[1]) >= int(minimum.group(1)), path.name
    # pyproject's dependencies are the names of requirements.txt, pins left to requirements.txt.
    assert {normalize(d) for d in project["dependencies"]} == set(requirement_pins()) - NOT_IN_ENVS


def _module_file(module: str) -> Path | None:
    base = REPO / "src" / Path(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _imports(path: Path) -> set[str]:
    """Every module a file imports (at any depth of the file: lazy imports count)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def third_party_imports(script: Path) -> set[str]:
    """Top-level third-party modules a rule script needs, following the `sarm` modules it imports."""
    seen, todo, found = set(), [script], set()
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for module in _imports(path):
            top = module.split(".")[0]
            if top == "sarm":
                parts = module.split(".")
                for i in range(1, len(parts) + 1):  # sarm.x.y imports sarm, sarm.x and sarm.x.y
                    file = _module_file(".".join(parts[:i]))
                    if file is not None:
                        todo.append(file)
            elif top not in sys.stdlib_module_names and top not in ("snakemake", "__future__"):
                found.add(top)
    return found


def rule_envs_and_scripts() -> list[tuple[str, str, Path]]:
    rows = []
    for smk in sorted((REPO / "workflow" / "rules").glob("*.smk")):
        for block in re.split(r"(?m)^rule ", smk.read_text())[1:]:
            name = block.split(":")[0]
            env = re.search(r'conda:\s*\n\s*ENVS / "([\w.]+)"', block)
            script = re.search(r'script:\s*\n\s*"\.\./\.\./(scripts/[\w.]+)"', block)
            if env and script:
                rows.append((name, env.group(1), REPO / script.group(1)))
    return rows


def test_rules_have_envs_and_scripts_to_check():
    assert len(rule_envs_and_scripts()) >= 10


@pytest.mark.parametrize("rule,env,script", rule_envs_and_scripts(), ids=lambda v: getattr(v, "name", v))
def test_each_rule_env_holds_every_package_its_script_imports(rule, env, script):
    distributions = importlib.metadata.packages_distributions()
    pins = env_pins(REPO / "envs" / env)
    missing = {}
    for module in sorted(third_party_imports(script)):
        names = {normalize(d) for d in distributions.get(module, [module])}
        if not names & set(pins):
            missing[module] = sorted(names)
    assert not missing, f"rule {rule}: envs/{env} lacks packages that {script.name} imports: {missing}"


def test_snakefile_makes_the_package_importable_without_installing_it():
    """What replaces `-e ..` in the envs: src/ on sys.path (handed to scripts) and PYTHONPATH for torchrun."""
    snakefile = (REPO / "workflow" / "Snakefile").read_text()
    assert re.search(r'sys\.path\.insert\(0, str\(.*"src"\)\)', snakefile)
    from sarm.rm.launch import package_env

    env = package_env({"PYTHONPATH": "/elsewhere"})
    assert env["PYTHONPATH"].split(":") == [str(REPO / "src"), "/elsewhere"]
