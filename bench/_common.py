"""What the catalog benchmarks share: their environment, the Replicate block on a fake, a catalog run in a child process.

A benchmark imports this first (it puts the checkout on sys.path and sets the
environment a bench needs: no analytics, quiet logs, the fakes' 127.0.0.1
allow-listed by the URL guard).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "ERROR")
# The fakes listen on 127.0.0.1, which the URL guard refuses unless allow-listed.
os.environ.setdefault("BRANDFORGE_URL_ALLOW", "127.0.0.1")

# One catalog_refresh in a fresh interpreter (to be SIGKILLed at will); `tag` marks its flow run.
CATALOG_SCRIPT = textwrap.dedent("""
    import sys
    sys.path.insert(0, {root!r})
    from prefect import tags
    from brandforge.flows.catalog_refresh import catalog_refresh
    with tags(*{tags!r}):
        catalog_refresh(client={client!r}, source={catalog!r}, work_dir={work!r})
""")


def replicate_block(fake: Any, job_dir: Path | str, **overrides: Any):
    """A ReplicateProvider pointed at a running Replicate fake, as the benchmarks price it."""
    from brandforge.blocks.providers.replicate import ReplicateProvider
    from tests.fakes import replicate as fake_replicate

    settings: dict[str, Any] = dict(base_url=fake.url, api_key=fake_replicate.TOKEN, request_timeout_s=10.0,
                                    job_dir=str(job_dir), price_per_image_usd=0.0115)
    return ReplicateProvider(**{**settings, **overrides})


def start_catalog(client: str, catalog: Path, work: Path, *, tags: tuple[str, ...] = (), log: Path | None = None,
                  env: dict[str, str] | None = None) -> subprocess.Popen:
    """`catalog_refresh` of `client` over the folder `catalog` in a child process, on this process's Prefect API."""
    from prefect.settings import PREFECT_API_URL

    script = CATALOG_SCRIPT.format(root=str(ROOT), client=client, catalog=str(catalog), work=str(work), tags=tuple(tags))
    child_env = {**os.environ, "PREFECT_API_URL": str(PREFECT_API_URL.value()), "PYTHONPATH": str(ROOT), **(env or {})}
    out = open(log, "ab") if log else subprocess.DEVNULL
    try:
        return subprocess.Popen([sys.executable, "-c", script], env=child_env, stdout=out, stderr=out)
    finally:
        if log:
            out.close()  # the child holds its own descriptor
