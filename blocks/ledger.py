"""Ledger: the one record of what happened to every asset, as a Prefect block.

Rows (one per asset × recipe attempt, appended) that are at once the audit
trail (source, keys, provider jobs, outputs, parameters, seed, scores, cost,
timings, final state) and the idempotency index (a source whose bytes and
recipe already ended `published` or `quarantined` is not paid for again). A row is
never rewritten but for two changes: a published image taken down because its source
was unpublished or deleted is marked `withdrawn` (`mark_withdrawn`), with the why; and
a published row whose asset was published again at the same target (a new recipe, new
bytes) is marked `replaced`, with `replaced_by` naming the newer row (`record`).
Beside them, the provider job journal: every paid job is on record from the
moment its price is reserved, so spend and budgets are true across crashes,
processes and workers.

SQLite by default; any SQLAlchemy URL (PostgreSQL for a fleet) works. The
schema is created and upgraded in place by Alembic (`ledger_migrations/`). The
URL is kept without its password: a password given in it moves to the
`password` secret, so the URL can appear in flow parameters, logs and CLI
output while the password never does.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
import zlib
from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any, Iterator

from prefect.blocks.core import Block
from pydantic import Field, SecretStr, field_validator, model_validator
from sqlalchemy import Connection, Engine, and_, create_engine, event, func, inspect, or_, select, text
from sqlalchemy.engine import URL, make_url

from brandforge.blocks.ledger_schema import (
    SPENDING_STATES,
    exact_usd,
    ledger_table,
    provider_jobs_table,
)
from brandforge.models import BrandforgeError, JobHandle, LedgerEntry

MIGRATIONS = Path(__file__).with_name("ledger_migrations")

# Final decisions: a rerun with the same source bytes and recipe does not redo them.
# `failed` is not final: the next run tries again.
DONE_STATES = ("published", "quarantined")
# Rows whose image was at a target once: still there, replaced by a republish, or taken down.
PUBLISHED_STATES = ("published", "replaced", "withdrawn")


class BudgetExceeded(BrandforgeError):
    """A generation would take the client over its run or monthly budget."""


_engines: dict[str, Engine] = {}
_engines_lock = threading.Lock()


def migrate(engine: Engine) -> None:
    """Bring the ledger's schema to the newest revision, in place (a fresh database gets every table).

    A ledger written before migrations existed (a `ledger` table, no version table) is stamped at
    the first revision, then upgraded. On PostgreSQL an advisory lock keeps two workers that start
    at once from migrating together.
    """
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": zlib.crc32(b"brandforge-ledger-migrate")})
        config.attributes["connection"] = conn
        tables = set(inspect(conn).get_table_names())
        if "ledger" in tables and "brandforge_ledger_version" not in tables:
            command.stamp(config, "0001")
        command.upgrade(config, "head")


def _engine(url: str) -> Engine:
    """One engine per URL per process (blocks are re-instantiated freely), migrated on first use."""
    with _engines_lock:
        if url not in _engines:
            kwargs: dict[str, Any] = {}
            sqlite = url.startswith("sqlite")
            if sqlite:
                path = url.split("///", 1)[-1]
                if path and path != ":memory:":
                    Path(path).parent.mkdir(parents=True, exist_ok=True)
                kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
            else:
                kwargs["pool_pre_ping"] = True
            engine = create_engine(url, future=True, hide_parameters=True, **kwargs)
            if sqlite:

                @event.listens_for(engine, "connect")
                def _connect(dbapi_conn, _record):
                    # WAL: readers go on while a worker writes. isolation_level=None hands transaction
                    # control to us, so a write can BEGIN IMMEDIATE: writers queue for the database's
                    # lock at the start, and a budget check-then-reserve is atomic across processes as
                    # it is under PostgreSQL's advisory lock.
                    dbapi_conn.isolation_level = None
                    cur = dbapi_conn.cursor()
                    cur.execute("PRAGMA journal_mode=WAL")
                    cur.execute("PRAGMA busy_timeout=30000")
                    cur.close()

                @event.listens_for(engine, "begin")
                def _begin(conn):
                    # Writes take the write lock up front (queued by busy_timeout); reads stay deferred,
                    # so under WAL they never wait for a writer.
                    conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get("ledger_write") else "BEGIN")

            migrate(engine)
            _engines[url] = engine
        return _engines[url]


def _to_entry(row) -> LedgerEntry:
    data = dict(row._mapping)
    data.pop("id", None)
    for key in ("job_ids", "output_uris"):
        data[key] = data.get(key) or []
    for key in ("params", "scores", "timings", "remote_ids"):
        data[key] = data.get(key) or {}
    data["reason"] = data.get("reason") or ""
    return LedgerEntry.model_validate(data)


def month_start(now: datetime | None = None) -> datetime:
    now = now or datetime.now(timezone.utc)
    return now.astimezone(timezone.utc).replace(day=1, hour=0, minute=0, second=0, microsecond=0)


@dataclass(frozen=True)
class JobRecord:
    """A journalled provider job (see `blocks.ledger_schema.provider_jobs_table`)."""

    id: int
    client: str
    provider: str
    job_id: str | None
    request_key: str | None
    generation_key: str | None
    cost_usd: Decimal
    state: str
    handle: JobHandle | None
    flow_run_id: str | None = None
    created_at: datetime | None = None


def _to_job(row) -> JobRecord:
    created = row.created_at
    return JobRecord(
        id=row.id, client=row.client, provider=row.provider, job_id=row.job_id, request_key=row.request_key,
        generation_key=row.generation_key, cost_usd=row.cost_usd, state=row.state,
        handle=JobHandle.model_validate(row.handle) if row.handle else None, flow_run_id=row.flow_run_id,
        created_at=created.replace(tzinfo=timezone.utc) if created is not None and created.tzinfo is None else created,
    )


class Ledger(Block):
    """Audit record, idempotency index and provider job journal (SQLite by default, any SQLAlchemy URL)."""

    _block_type_name = "Brandforge Ledger"
    _block_type_slug = "brandforge-ledger"
    _description = "Append-only record of every asset and every paid provider job: keys, jobs, outputs, parameters, scores, cost, state."

    url: str = Field(
        "sqlite:///.brandforge/ledger.db",
        description="SQLAlchemy URL without the password, e.g. postgresql+psycopg://brandforge@db:5432/brandforge.",
    )
    password: SecretStr | None = Field(None, description="Database password (kept secret; never part of the URL).")

    @model_validator(mode="before")
    @classmethod
    def _password_out_of_url(cls, data: Any) -> Any:
        """A password written into the URL moves to the `password` secret."""
        if isinstance(data, dict) and isinstance(data.get("url"), str):
            try:
                parsed = make_url(data["url"])
            except Exception:  # noqa: BLE001 - the field validator names the problem
                return data
            if parsed.password is not None:
                bare = URL.create(parsed.drivername, parsed.username, None, parsed.host, parsed.port, parsed.database, parsed.query)
                data = {**data, "url": bare.render_as_string(hide_password=False)}
                if not data.get("password"):
                    data["password"] = str(parsed.password)
        return data

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        try:
            parsed = make_url(v)
        except Exception as exc:  # noqa: BLE001 - SQLAlchemy's parse errors vary
            raise ValueError(f"url must be an SQLAlchemy database URL such as sqlite:///ledger.db or "
                             f"postgresql+psycopg://user@host/db (got {v!r})") from exc
        return parsed.render_as_string(hide_password=False)

    @contextmanager
    def _writing(self) -> Iterator[Connection]:
        """One write transaction (on SQLite it holds the write lock from its BEGIN)."""
        with self.engine.connect() as conn:
            conn.execution_options(ledger_write=True)
            with conn.begin():
                yield conn

    @property
    def engine(self) -> Engine:
        url = make_url(self.url)
        if self.password is not None:
            url = url.set(password=self.password.get_secret_value())
        return _engine(url.render_as_string(hide_password=False))

    # ------------------------------------------------------------------ the asset rows

    def record(self, entry: LedgerEntry) -> int:
        """Append a row. A `published` row is the asset's current publish at its target: in the same
        transaction, this client's earlier rows still `published` for the same source at the same
        target instance become `replaced`, pointing at this one (the target replaced their entry)."""
        row = entry.model_dump()
        if entry.recipe_snapshot is not None:  # a JSON column: plain JSON values
            row["recipe_snapshot"] = entry.recipe_snapshot.model_dump(mode="json")
        with self._writing() as conn:
            result = conn.execute(ledger_table.insert().values(**row))
            row_id = int(result.inserted_primary_key[0])
            if entry.state == "published" and entry.target_key:
                t = ledger_table.c
                conn.execute(ledger_table.update().where(
                    t.client == entry.client, t.source_uri == entry.source_uri, t.target_key == entry.target_key,
                    t.state == "published", t.id != row_id,
                ).values(state="replaced", replaced_by=row_id, reason=f"replaced by row {row_id}"))
            return row_id

    def current_publish(self, client: str, target_key: str, source_uri: str) -> tuple[int, LedgerEntry] | None:
        """(row id, entry) of this client's current publish of this source at this target instance, if any:
        what a republish with a new recipe replaces there."""
        t = ledger_table.c
        query = (select(ledger_table).where(t.client == client, t.source_uri == source_uri, t.target_key == target_key,
                                            t.state == "published").order_by(t.id.desc()).limit(1))
        with self.engine.connect() as conn:
            row = conn.execute(query).first()
        return (row.id, _to_entry(row)) if row else None

    def _latest(self, *where) -> LedgerEntry | None:
        query = select(ledger_table).where(*where).order_by(ledger_table.c.id.desc()).limit(1)
        with self.engine.connect() as conn:
            row = conn.execute(query).first()
        return _to_entry(row) if row else None

    def finished(self, client: str, source_key: str, recipe_key: str) -> LedgerEntry | None:
        """The final decision already taken for these source bytes and this recipe, if any."""
        t = ledger_table.c
        return self._latest(t.client == client, t.source_key == source_key, t.recipe_key == recipe_key, t.state.in_(DONE_STATES))

    def published_for_generation(self, client: str, target_key: str, key: str) -> LedgerEntry | None:
        """This client's publish of this output (its output key) or generation (its generation key) to this
        very target instance, if any. Rows written before output keys existed have none: their
        generation key was the published output's identity.

        All three must match: another client's publish (even of identical bytes and recipe)
        or another target (another bucket, site or gallery) is never reused as a receipt.
        """
        t = ledger_table.c
        return self._latest(t.client == client, t.target_key == target_key,
                            or_(t.output_key == key, t.generation_key == key), t.state == "published")

    def published_rows_for_sources(self, client: str, source_uris: list[str]) -> list[tuple[int, LedgerEntry]]:
        """(row id, entry) of this client's rows still `published` for any of these sources, oldest first."""
        if not source_uris:
            return []
        t = ledger_table.c
        query = select(ledger_table).where(t.client == client, t.source_uri.in_(source_uris), t.state == "published").order_by(t.id)
        with self.engine.connect() as conn:
            return [(r.id, _to_entry(r)) for r in conn.execute(query)]

    def mark_withdrawn(self, row_id: int, reason: str) -> bool:
        """Mark a published row `withdrawn` (its image was taken down); False when it no longer was published."""
        t = ledger_table.c
        with self._writing() as conn:
            done = conn.execute(ledger_table.update().where(t.id == row_id, t.state == "published")
                                .values(state="withdrawn", reason=reason[:1000]))
            return done.rowcount == 1

    def regeneration_notes(self, client: str, source_key: str, recipe_key: str) -> list[str]:
        """Reviewers' notes of every 'regenerate' answer for these bytes and this recipe, oldest first."""
        t = ledger_table.c
        query = (
            select(ledger_table)
            .where(t.client == client, t.source_key == source_key, t.recipe_key == recipe_key,
                   t.state == "failed", t.reason.like("review: regenerate%"))
            .order_by(t.id)
        )
        with self.engine.connect() as conn:
            return [str(((r.scores or {}).get("review") or {}).get("note") or "") for r in conn.execute(query)]

    def first_seed(self, client: str, source_key: str, recipe_key: str) -> int | None:
        """The seed first recorded for these bytes and this recipe (a 'random' seed policy draws once and
        asks for the same seed on every rerun), or None."""
        t = ledger_table.c
        query = (select(t.seed).where(t.client == client, t.source_key == source_key, t.recipe_key == recipe_key,
                                      t.seed.is_not(None)).order_by(t.id).limit(1))
        with self.engine.connect() as conn:
            row = conn.execute(query).first()
        return int(row[0]) if row else None

    def pass_rates(self, client: str, recipe: str, last: int = 200) -> dict[str, tuple[int, int]]:
        """Provider route name -> (published, published + quarantined) over this client's last `last` gate
        decisions with this recipe: what cost-aware routing compares with the profile's floor. Rows are
        attributed by `params.provider_ref` (the profile's provider name), else 'default'."""
        t = ledger_table.c
        query = (select(t.state, t.params).where(t.client == client, t.recipe == recipe,
                                                 t.state.in_(("published", "replaced", "quarantined")))
                 .order_by(t.id.desc()).limit(last))
        rates: dict[str, list[int]] = {}
        with self.engine.connect() as conn:
            for state, params in conn.execute(query):
                name = str((params or {}).get("provider_ref") or "default")
                counts = rates.setdefault(name, [0, 0])
                counts[0] += state != "quarantined"  # a replaced row passed its gates too
                counts[1] += 1
        return {k: (v[0], v[1]) for k, v in rates.items()}

    def published_phashes(self, client: str, exclude_source_uri: str | None = None) -> list[str]:
        """Perceptual hashes of every image published for `client` (the duplicate gate compares against them).

        `exclude_source_uri` leaves out the asset's own earlier versions: republishing it
        after its recipe changed replaces it, it does not duplicate it.
        """
        t = ledger_table.c
        query = select(t.phash).where(t.client == client, t.state == "published", t.phash.is_not(None))
        if exclude_source_uri is not None:
            query = query.where(t.source_uri != exclude_source_uri)
        with self.engine.connect() as conn:
            return [h for (h,) in conn.execute(query)]

    def entries(
        self,
        client: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        state: str | None = None,
    ) -> list[LedgerEntry]:
        return [entry for _, entry in self.rows(client, since, until, state)]

    def rows(
        self, client: str | None = None, since: datetime | None = None, until: datetime | None = None,
        state: str | None = None,
    ) -> list[tuple[int, LedgerEntry]]:
        """(row id, entry) in id order, `since` inclusive and `until` exclusive: the compliance export.

        `client=None` means every client's rows: callers acting for one client always pass it."""
        t = ledger_table.c
        query = select(ledger_table).order_by(t.id)
        if client is not None:
            query = query.where(t.client == client)
        if since:
            query = query.where(t.created_at >= since)
        if until:
            query = query.where(t.created_at < until)
        if state:
            query = query.where(t.state == state)
        with self.engine.connect() as conn:
            return [(r.id, _to_entry(r)) for r in conn.execute(query)]

    def lineage(self, ref: str, client: str | None) -> list[tuple[int, LedgerEntry]]:
        """Every row of `client` about the image `ref` names, oldest first (`client=None`: any client's).

        `ref` is a published URL, a generation key (or a prefix of 8+ characters), a
        ledger row id, or a remote id or URL a target returned (a post id, a media URL,
        an S3 key). All attempts for the same generation key follow, those for the
        same source bytes that failed before a generation key existed, and the rows the
        image replaced or was replaced by (its asset republished at the same target).
        """
        t = ledger_table.c
        ref = ref.strip()
        mine = [t.client == client] if client is not None else []
        hits = [t.published_url == ref, t.generation_key == ref]
        if ref.isdigit() and int(ref) < 2**63:
            hits.append(t.id == int(ref))
        if len(ref) >= 8 and all(c in "0123456789abcdef" for c in ref):
            hits.append(t.generation_key.startswith(ref))
        with self.engine.connect() as conn:
            found = list(conn.execute(select(ledger_table).where(or_(*hits), *mine)))
            if not found:  # remote ids live in JSON, whose operators differ per database: scan published rows
                found = [
                    r for r in conn.execute(select(ledger_table).where(t.state.in_(PUBLISHED_STATES), *mine))
                    if ref in {str(v) for v in (r.remote_ids or {}).values()}
                ]
            found = self._replacement_chain(conn, found, mine)
            keys = {r.generation_key for r in found if r.generation_key}
            sources = {r.source_key for r in found if r.source_key}
            related = list(conn.execute(
                select(ledger_table).where(or_(
                    t.id.in_([r.id for r in found]), t.generation_key.in_(keys),
                    and_(t.source_key.in_(sources), t.generation_key.is_(None)),  # attempts that failed before a key existed
                ), *mine).order_by(t.id)
            )) if found else []
        return [(r.id, _to_entry(r)) for r in related]

    @staticmethod
    def _replacement_chain(conn: Connection, rows: list, mine: list) -> list:
        """`rows` with every row they replaced or were replaced by, transitively (a republish chain)."""
        t = ledger_table.c
        chain = {r.id: r for r in rows}
        while True:
            ids = list(chain)
            successors = [r.replaced_by for r in chain.values() if r.replaced_by is not None]
            more = [r for r in conn.execute(select(ledger_table).where(
                or_(t.replaced_by.in_(ids), t.id.in_(successors)), *mine)) if r.id not in chain]
            if not more:
                return list(chain.values())
            chain.update((r.id, r) for r in more)

    # ------------------------------------------------------------------ spend: the provider job journal

    def spent(self, client: str, since: datetime | None = None, run_key: str | None = None) -> Decimal:
        """What this client's provider jobs cost since `since` (the start of this month by default),
        or within one run. Counts every job from the moment its price was reserved, until the
        provider refused it: a job in flight, or one whose asset later failed, is money spent."""
        j = provider_jobs_table.c
        query = select(func.coalesce(func.sum(j.cost_usd), Decimal(0))).where(j.client == client, j.state.in_(SPENDING_STATES))
        if run_key is not None:
            query = query.where(j.run_key == run_key)
        else:
            query = query.where(j.created_at >= (since or month_start()))
        with self.engine.connect() as conn:
            return exact_usd(conn.execute(query).scalar_one() or 0)

    def reserve_job(
        self, *, client: str, provider: str, model: str | None, amount: Decimal | float, request_key: str,
        generation_key: str | None = None, source_uri: str | None = None, run_key: str | None = None,
        run_budget_usd: float | None = None, monthly_budget_usd: float | None = None, flow_run_id: str | None = None,
    ) -> int:
        """Hold `amount` for one job about to be submitted, or raise BudgetExceeded with the figures.

        Check and reservation are one transaction under a lock of the whole ledger (SQLite's
        BEGIN IMMEDIATE) or of this client (a PostgreSQL advisory lock): two workers cannot
        both spend a client's last dollars. Returns the journal row's id.
        """
        amount = exact_usd(amount)
        now = datetime.now(timezone.utc)
        j = provider_jobs_table.c
        spend = select(func.coalesce(func.sum(j.cost_usd), Decimal(0))).where(j.client == client, j.state.in_(SPENDING_STATES))
        with self._writing() as conn:
            if conn.dialect.name == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": zlib.crc32(f"brandforge-spend-{client}".encode())})
            if amount > 0 and run_budget_usd is not None and run_key is not None:
                run = exact_usd(conn.execute(spend.where(j.run_key == run_key)).scalar_one() or 0)
                if run + amount > exact_usd(run_budget_usd):
                    raise BudgetExceeded(f"run budget exhausted: ${run:.2f} of ${run_budget_usd:.2f} spent, "
                                         f"next generation costs ${amount:.2f}")
            if amount > 0 and monthly_budget_usd is not None:
                month = exact_usd(conn.execute(spend.where(j.created_at >= month_start(now))).scalar_one() or 0)
                if month + amount > exact_usd(monthly_budget_usd):
                    raise BudgetExceeded(f"monthly budget exhausted: ${month:.2f} of ${monthly_budget_usd:.2f} spent, "
                                         f"next generation costs ${amount:.2f}")
            result = conn.execute(provider_jobs_table.insert().values(
                client=client, run_key=run_key, provider=provider, model=model, request_key=request_key,
                generation_key=generation_key, source_uri=source_uri, cost_usd=amount, state="reserved",
                flow_run_id=flow_run_id, created_at=now, updated_at=now,
            ))
            return int(result.inserted_primary_key[0])

    def _update_job(self, row_id: int, **values: Any) -> None:
        with self._writing() as conn:
            conn.execute(provider_jobs_table.update().where(provider_jobs_table.c.id == row_id)
                         .values(**values, updated_at=datetime.now(timezone.utc)))

    def job_accepted(self, row_id: int, handle: JobHandle, cost_usd: Decimal | float | None = None) -> int:
        """The provider accepted the job: its id and handle are on record (a rerun resumes it), and so is its cost.

        A job id already in the journal is the same job, not a second one (a deterministic engine,
        or a provider that deduplicated an idempotent request): this reservation is released and
        the existing row, whose id is returned, stands for the job — it is never counted twice."""
        j = provider_jobs_table.c
        now = datetime.now(timezone.utc)
        with self._writing() as conn:
            existing = conn.execute(select(j.id).where(j.provider == handle.provider, j.job_id == handle.job_id)).scalar()
            if existing is not None and existing != row_id:
                conn.execute(provider_jobs_table.update().where(j.id == row_id).values(
                    state="released", cost_usd=Decimal(0), updated_at=now,
                    reason=f"the provider answered with job {handle.job_id}, already journalled as row {existing}"))
                conn.execute(provider_jobs_table.update().where(j.id == existing).values(
                    state="submitted", handle=handle.model_dump(mode="json"), updated_at=now))
                return int(existing)
            values: dict[str, Any] = {"state": "submitted", "job_id": handle.job_id, "handle": handle.model_dump(mode="json"),
                                      "updated_at": now}
            if cost_usd is not None:
                values["cost_usd"] = exact_usd(cost_usd)
            conn.execute(provider_jobs_table.update().where(j.id == row_id).values(**values))
        return row_id

    def job_finished(self, row_id: int, *, succeeded: bool, reason: str = "") -> None:
        """The provider finished the job (its cost stands either way: providers bill failed jobs' compute)."""
        self._update_job(row_id, state="succeeded" if succeeded else "failed", reason=reason[:1000] or None)

    def job_released(self, row_id: int, reason: str) -> None:
        """The provider refused the submission: no job exists, nothing was spent."""
        self._update_job(row_id, state="released", cost_usd=Decimal(0), reason=reason[:1000])

    def open_job(self, client: str, request_key: str) -> JobRecord | None:
        """This client's newest accepted, unfinished job for this exact request: a rerun resumes it
        instead of paying for a new one (a worker died, or a task retry outlived the wait)."""
        j = provider_jobs_table.c
        query = (select(provider_jobs_table)
                 .where(j.client == client, j.request_key == request_key, j.state == "submitted")
                 .order_by(j.id.desc()).limit(1))
        with self.engine.connect() as conn:
            row = conn.execute(query).first()
        return _to_job(row) if row else None

    def unanswered_jobs(self, client: str, request_key: str, other_than_run: str | None) -> list[JobRecord]:
        """This request's reservations, newest first, that another flow run made and never saw answered:
        its process died between submitting and writing the answer down, so a job may exist, billed."""
        j = provider_jobs_table.c
        query = (select(provider_jobs_table)
                 .where(j.client == client, j.request_key == request_key, j.state == "reserved")
                 .order_by(j.id.desc()))
        if other_than_run is not None:
            query = query.where((j.flow_run_id != other_than_run) | j.flow_run_id.is_(None))
        with self.engine.connect() as conn:
            return [_to_job(r) for r in conn.execute(query)]

    def known_job_ids(self, client: str, request_key: str) -> set[str]:
        """Provider job ids already on record for this request (whatever became of them)."""
        j = provider_jobs_table.c
        query = select(j.job_id).where(j.client == client, j.request_key == request_key, j.job_id.is_not(None))
        with self.engine.connect() as conn:
            return {r[0] for r in conn.execute(query)}

    def jobs(self, client: str | None, since: datetime | None = None) -> list[JobRecord]:
        """The journal in id order (`client=None`: every client's)."""
        j = provider_jobs_table.c
        query = select(provider_jobs_table).order_by(j.id)
        if client is not None:
            query = query.where(j.client == client)
        if since is not None:
            query = query.where(j.created_at >= since)
        with self.engine.connect() as conn:
            return [_to_job(r) for r in conn.execute(query)]
