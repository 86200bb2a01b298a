"""One import namespace: a user's own `models.py`, `tasks/` or `flows/` cannot shadow brandforge.

Runs the installed CLI and imports flows from a folder that holds such files,
and checks that installing brandforge put nothing generic into site-packages.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

GENERIC = ("models", "tasks", "flows", "blocks", "deployments")


def users_project(folder: Path) -> Path:
    """A Django/Celery-like project: its own models.py, tasks/ and flows/, all of which fail loudly if imported."""
    (folder / "models.py").write_text("raise ImportError(\"the user's own models.py was imported\")\n")
    for package in ("tasks", "flows", "blocks"):
        (folder / package).mkdir()
        (folder / package / "__init__.py").write_text(f"raise ImportError(\"the user's own {package}/ was imported\")\n")
    return folder


def run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_imports_and_the_cli_work_beside_a_users_own_models_and_tasks(tmp_path):
    project = users_project(tmp_path)
    code = ("import brandforge.blocks.providers.base; from brandforge.flows.catalog_refresh import catalog_refresh; "
            "from brandforge.models import GenerationRequest; print(catalog_refresh.name)")
    imported = run([sys.executable, "-c", code], project)
    assert imported.returncode == 0 and imported.stdout.strip() == "catalog-refresh", imported.stderr[-2000:]
    cli = run([str(Path(sys.executable).with_name("brandforge")), "export", "--help"], project)
    assert cli.returncode == 0 and "--all-clients" in cli.stdout, cli.stderr[-2000:]


def test_nothing_generic_is_installed(tmp_path):
    probe = "import importlib.util as u; print([n for n in %r if u.find_spec(n)])" % (GENERIC,)
    found = run([sys.executable, "-c", probe], tmp_path)
    assert found.returncode == 0 and found.stdout.strip() == "[]", found.stdout + found.stderr
