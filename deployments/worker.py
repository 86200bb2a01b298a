"""A process worker for the `brandforge` work pool that stops on SIGTERM, however it was started.

    make worker                               # or: python -m brandforge.deployments.worker [--pool brandforge] [worker options]

`prefect worker start` turns SIGTERM into a SIGINT to itself (and a second
SIGTERM into SIGKILL). A process started in the background by a
non-interactive shell (`prefect worker start … &` in a script, many init and
container entrypoint wrappers) inherits SIGINT *ignored*, so that SIGINT does
nothing and the worker keeps running after SIGTERM. This wrapper restores
SIGINT's default disposition and then becomes `prefect worker start` (exec:
same process id, so a process manager's signals reach the worker itself).
"""

from __future__ import annotations

import os
import signal
import sys

DEFAULT_POOL = "brandforge"


def worker_command(argv: list[str]) -> list[str]:
    """The `prefect worker start` command line: `--pool brandforge --type process` unless given."""
    args = list(argv)
    if not any(a in ("--pool", "-p") or a.startswith("--pool=") for a in args):
        args = ["--pool", DEFAULT_POOL, *args]
    if not any(a in ("--type", "-t") or a.startswith("--type=") for a in args):
        args += ["--type", "process"]
    return [sys.executable, "-m", "prefect", "worker", "start", *args]


def main(argv: list[str] | None = None) -> None:
    command = worker_command(sys.argv[1:] if argv is None else argv)
    # An ignored signal stays ignored across exec; a default one becomes Python's KeyboardInterrupt again.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    os.execv(command[0], command)


if __name__ == "__main__":
    main()
