"""Ledger: the one record of what happened to every asset, as a Prefect block.

Append-only rows (one per asset × recipe attempt) that are at once the audit
trail (source, keys, provider jobs, outputs, parameters, seed, scores, cost,
timings, final state) and the idempotency index (a source whose bytes and
recipe already ended `published` or `quarantined` is not paid for again).
SQLite by default; any SQLAlchemy URL (PostgreSQL for a fleet) works.
"""

from __future__ import annotations

import threading
from datetime import datetime, timezone
from pathlib import Path

from prefect.blocks.core import Block
from pydantic import Field
from sqlalchemy import (
    JSON,
    Column,
    DateTime,
    Engine,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    event,
    and_,
    func,
    or_,
    select,
)

from models import LedgerEntry

metadata = MetaData()

ledger_table = Table(
    "ledger",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("client", String(64), nullable=False, index=True),
    Column("source_uri", Text, nullable=False),
    Column("source_key", String(64), index=True),
    Column("recipe", String(128)),
    Column("recipe_key", String(64)),
    Column("generation_key", String(64), index=True),
    Column("provider", String(64)),
    Column("model", String(256)),
    Column("job_ids", JSON),
    Column("output_uris", JSON),
    Column("params", JSON),
    Column("seed", Integer),
    Column("scores", JSON),
    Column("cost_usd", Float, nullable=False, default=0.0),
    Column("timings", JSON),
    Column("state", String(16), nullable=False, index=True),
    Column("reason", Text),
    Column("target", String(64)),
    Column("remote_ids", JSON),
    Column("published_url", Text),
    Column("phash", String(64)),
    Column("flow_run_id", String(64)),
    Column("created_at", DateTime(timezone=True), nullable=False, index=True),
)

# Final decisions: a rerun with the same source bytes and recipe does not redo them.
# `failed` is not final: the next run tries again.
DONE_STATES = ("published", "quarantined")

_engines: dict[str, Engine] = {}
_engines_lock = threading.Lock()


def _engine(url: str) -> Engine:
    """One engine per URL per process (blocks are re-instantiated freely)."""
    with _engines_lock:
        if url not in _engines:
            kwargs = {}
            if url.startswith("sqlite"):
                path = url.split("///", 1)[-1]
                if path and path != ":memory:":
                    Path(path).parent.mkdir(parents=True, exist_ok=True)
                kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
            engine = create_engine(url, future=True, **kwargs)
            if url.startswith("sqlite"):

                @event.listens_for(engine, "connect")
                def _wal(dbapi_conn, _record):  # concurrent readers while a worker writes
                    cur = dbapi_conn.cursor()
                    cur.execute("PRAGMA journal_mode=WAL")
                    cur.execute("PRAGMA busy_timeout=30000")
                    cur.close()

            metadata.create_all(engine)
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


class Ledger(Block):
    """Audit record and idempotency index (SQLite by default, any SQLAlchemy URL)."""

    _block_type_name = "Brandforge Ledger"
    _block_type_slug = "brandforge-ledger"
    _description = "Append-only record of every asset: keys, jobs, outputs, parameters, scores, cost, state."

    url: str = Field("sqlite:///.brandforge/ledger.db", description="SQLAlchemy URL, e.g. postgresql+psycopg://…")

    @property
    def engine(self) -> Engine:
        return _engine(self.url)

    def record(self, entry: LedgerEntry) -> int:
        row = entry.model_dump()
        with self.engine.begin() as conn:
            result = conn.execute(ledger_table.insert().values(**row))
            return int(result.inserted_primary_key[0])

    def _latest(self, *where) -> LedgerEntry | None:
        query = select(ledger_table).where(*where).order_by(ledger_table.c.id.desc()).limit(1)
        with self.engine.connect() as conn:
            row = conn.execute(query).first()
        return _to_entry(row) if row else None

    def finished(self, client: str, source_key: str, recipe_key: str) -> LedgerEntry | None:
        """The final decision already taken for these source bytes and this recipe, if any."""
        t = ledger_table.c
        return self._latest(t.client == client, t.source_key == source_key, t.recipe_key == recipe_key, t.state.in_(DONE_STATES))

    def published_for_generation(self, generation_key: str) -> LedgerEntry | None:
        t = ledger_table.c
        return self._latest(t.generation_key == generation_key, t.state == "published")

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
        """(row id, entry) in id order, `since` inclusive and `until` exclusive: the compliance export."""
        t = ledger_table.c
        query = select(ledger_table).order_by(t.id)
        if client:
            query = query.where(t.client == client)
        if since:
            query = query.where(t.created_at >= since)
        if until:
            query = query.where(t.created_at < until)
        if state:
            query = query.where(t.state == state)
        with self.engine.connect() as conn:
            return [(r.id, _to_entry(r)) for r in conn.execute(query)]

    def lineage(self, ref: str) -> list[tuple[int, LedgerEntry]]:
        """Every row about the image `ref` names, oldest first.

        `ref` is a published URL, a generation key (or a prefix of 8+ characters), a
        ledger row id, or a remote id or URL a target returned (a post id, a media URL,
        an S3 key). All attempts for the same generation key follow, and those for the
        same source bytes that failed before a generation key existed.
        """
        t = ledger_table.c
        ref = ref.strip()
        hits = [t.published_url == ref, t.generation_key == ref]
        if ref.isdigit():
            hits.append(t.id == int(ref))
        if len(ref) >= 8 and all(c in "0123456789abcdef" for c in ref):
            hits.append(t.generation_key.startswith(ref))
        with self.engine.connect() as conn:
            found = list(conn.execute(select(ledger_table).where(or_(*hits))))
            if not found:  # remote ids live in JSON, whose operators differ per database: scan published rows
                found = [
                    r for r in conn.execute(select(ledger_table).where(t.state == "published"))
                    if ref in {str(v) for v in (r.remote_ids or {}).values()}
                ]
            keys = {r.generation_key for r in found if r.generation_key}
            sources = {r.source_key for r in found if r.source_key}
            related = list(conn.execute(
                select(ledger_table).where(or_(
                    t.id.in_([r.id for r in found]), t.generation_key.in_(keys),
                    and_(t.source_key.in_(sources), t.generation_key.is_(None)),  # attempts that failed before a key existed
                )).order_by(t.id)
            )) if found else []
        return [(r.id, _to_entry(r)) for r in related]

    def spent(self, client: str, since: datetime | None = None) -> float:
        """What this client's generations cost since `since` (the start of this month by default)."""
        if since is None:
            now = datetime.now(timezone.utc)
            since = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        t = ledger_table.c
        query = select(func.coalesce(func.sum(t.cost_usd), 0.0)).where(t.client == client, t.created_at >= since)
        with self.engine.connect() as conn:
            return float(conn.execute(query).scalar_one())
