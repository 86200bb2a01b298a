"""Deployment steps for `prefect.yaml`: where a work-pool run finds brandforge's code.

A process worker runs each flow run in a subprocess after the deployment's pull
steps; the entrypoints (`flows/catalog_refresh.py:…`) are paths inside the
brandforge checkout. `enter_project` makes that checkout the run's working
directory: `$BRANDFORGE_HOME` when set (the checkout on the worker's machine),
else the checkout this module was imported from (the worker's environment has
brandforge installed with `pip install -e .`, as `make run` does).
"""

from __future__ import annotations

import os
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent


class ProjectNotFound(RuntimeError):
    """The folder a work-pool run should run in is not a brandforge checkout."""


def project_directory() -> Path:
    home = os.environ.get("BRANDFORGE_HOME")
    where = Path(home).expanduser() if home else PROJECT
    origin = "$BRANDFORGE_HOME" if home else "the checkout brandforge is installed from"
    if not (where / "flows" / "catalog_refresh.py").is_file():
        raise ProjectNotFound(f"{origin} ({where}) is not a brandforge checkout (no flows/catalog_refresh.py): set "
                              "BRANDFORGE_HOME on the worker to the folder that holds prefect.yaml")
    return where.resolve()


def enter_project() -> dict[str, str]:
    """Pull step: chdir into the brandforge checkout; returns {"directory": …} like set_working_directory."""
    directory = project_directory()
    os.chdir(directory)
    return {"directory": str(directory)}
