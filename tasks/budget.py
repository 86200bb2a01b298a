"""Budgets: stop paying a provider once a run or a month has spent what the client allows.

Spend is reserved before a generation is submitted (price × batch size) so
concurrent assets of one run cannot overshoot together; the month's spend comes
from the ledger, so it holds across runs and workers.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from blocks.client_profile import ClientProfile
from models import BrandforgeError


class BudgetExceeded(BrandforgeError):
    """A generation would take the client over its run or monthly budget."""


@dataclass
class _RunSpend:
    reserved: float = 0.0  # everything this run has reserved
    unrecorded: float = 0.0  # reserved but not yet in the ledger


_lock = threading.Lock()
_runs: dict[str, _RunSpend] = {}


def reserve(profile: ClientProfile, amount: float, run_key: str | None) -> None:
    """Reserve `amount` USD for one generation or raise BudgetExceeded with the figures."""
    if amount <= 0:
        return
    with _lock:
        run = _runs.setdefault(run_key or "", _RunSpend())
        if profile.run_budget_usd is not None and run.reserved + amount > profile.run_budget_usd + 1e-9:
            raise BudgetExceeded(
                f"run budget exhausted: ${run.reserved:.2f} of ${profile.run_budget_usd:.2f} spent, next generation costs ${amount:.2f}"
            )
        if profile.monthly_budget_usd is not None:
            month = profile.ledger.spent(profile.client_id) + sum(r.unrecorded for r in _runs.values())
            if month + amount > profile.monthly_budget_usd + 1e-9:
                raise BudgetExceeded(
                    f"monthly budget exhausted: ${month:.2f} of ${profile.monthly_budget_usd:.2f} spent, next generation costs ${amount:.2f}"
                )
        run.reserved += amount
        run.unrecorded += amount


def settle(run_key: str | None, amount: float) -> None:
    """The ledger now holds `amount` of this run's reservations."""
    with _lock:
        run = _runs.get(run_key or "")
        if run:
            run.unrecorded = max(0.0, run.unrecorded - amount)


def release_run(run_key: str) -> None:
    with _lock:
        _runs.pop(run_key, None)
