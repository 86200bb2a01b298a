"""brandforge: one import namespace for the whole project.

The design card keeps `flows/`, `tasks/`, `blocks/` and `deployments/` at the top
of the checkout; they are imported as `brandforge.flows`, `brandforge.tasks`,
`brandforge.blocks`, `brandforge.deployments` (and the shared models as
`brandforge.models`), so installing brandforge puts only `brandforge` into
site-packages and no user's own `models.py`, `tasks/` or `flows/` can shadow it.

Installed from a wheel, the folders are subpackages here (pyproject's package-dir
mapping); in a checkout or an editable install, this package's search path also
holds the checkout's root, where the folders live.
"""

from pathlib import Path as _Path

_checkout = _Path(__file__).resolve().parent.parent
if (_checkout / "flows" / "catalog_refresh.py").is_file() and not (_Path(__file__).parent / "flows").is_dir():
    __path__.append(str(_checkout))  # noqa: F821 - a package's __path__
