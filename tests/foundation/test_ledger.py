"""The ledger: append-only rows, idempotency lookups, the job journal and spend.

Every test here runs twice, on SQLite and on a real PostgreSQL (the `ledger_url`
fixture): SQLite checks no column width, PostgreSQL does, and a production
ledger is PostgreSQL.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest
from sqlalchemy import create_engine, inspect, text

from brandforge.blocks.ledger import BudgetExceeded, Ledger
from brandforge.blocks.ledger_schema import ledger_table
from brandforge.models import JobHandle, LedgerEntry
from tests.conftest import new_postgres_database


def entry(**kw) -> LedgerEntry:
    base = dict(client="acme", source_uri="file:///a.png", source_key="s1", recipe_key="r1", generation_key="g1",
                state="published", cost_usd=0.04, target="s3", target_key="t1")
    return LedgerEntry(**{**base, **kw})


def test_rows_lookups_and_concurrent_writers(ledger_url):
    ledger = Ledger(url=ledger_url)
    assert ledger.finished("acme", "s1", "r1") is None
    ledger.record(entry(state="failed", reason="generate: timeout", cost_usd=0.0))
    assert ledger.finished("acme", "s1", "r1") is None  # failure is not final
    ledger.record(entry(job_ids=["j1"], scores={"variant-0": {"sharpness": 80.5}}, published_url="https://cms/1"))
    done = ledger.finished("acme", "s1", "r1")
    assert done and done.state == "published" and done.job_ids == ["j1"] and done.scores["variant-0"]["sharpness"] == 80.5
    assert ledger.finished("acme", "s1", "r2") is None  # another recipe is another decision
    assert ledger.published_for_generation("acme", "t1", "g1").published_url == "https://cms/1"
    ledger.record(entry(source_key="s2", generation_key="g2", state="quarantined", reason="sharpness 3.0"))
    assert ledger.finished("acme", "s2", "r1").reason == "sharpness 3.0"
    assert len(ledger.entries(client="acme")) == 3
    assert len(ledger.entries(client="acme", state="failed")) == 1
    assert ledger.entries(client="acme", since=datetime.now(timezone.utc) + timedelta(hours=1)) == []
    # Many workers writing at once lose nothing.
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda i: ledger.record(entry(source_key=f"c{i}", generation_key=f"gc{i}")), range(40)))
    assert len(ledger.entries(client="acme")) == 43


def test_the_reproduction_seed_2_31_is_recorded(ledger_url):
    """The issue's reproduction: PostgreSQL answered 'integer out of range'."""
    ledger = Ledger(url=ledger_url)
    ledger.record(LedgerEntry(client="x", source_uri="u", state="failed", seed=2**31))
    (row,) = ledger.entries(client="x")
    assert row.seed == 2**31


@pytest.mark.parametrize("seed", [0, 2**31 - 1, 2**31, 2**32 - 1, 2**32, 2**63 - 1])
def test_seed_boundaries(ledger_url, seed):
    ledger = Ledger(url=ledger_url)
    ledger.record(entry(seed=seed))
    assert ledger.entries(client="acme")[0].seed == seed


def test_seed_out_of_64_bits_is_refused_naming_the_field():
    with pytest.raises(ValueError, match=r"seed must be between 0 and 2\*\*63-1"):
        entry(seed=2**63)
    with pytest.raises(ValueError, match="seed must be between"):
        entry(seed=-1)


@pytest.mark.parametrize("cost", ["0", "0.000001", "0.0115", "12.5", "999999999999.999999"])
def test_cost_boundaries_are_exact(ledger_url, cost):
    ledger = Ledger(url=ledger_url)
    ledger.record(entry(cost_usd=Decimal(cost)))
    assert ledger.entries(client="acme")[0].cost_usd == Decimal(cost)


def test_costs_are_exact_decimals_and_sum_exactly(ledger_url):
    ledger = Ledger(url=ledger_url)
    for amount in (0.1, 0.2, 0.0115):  # floats in: their shortest repr is what is stored
        ledger.record(entry(cost_usd=amount))
        rid = ledger.reserve_job(client="acme", provider="replicate", model="m", amount=amount, request_key="k")
        ledger.job_accepted(rid, JobHandle(provider="replicate", job_id=f"job-{amount}"))
    assert [e.cost_usd for e in ledger.entries(client="acme")] == [Decimal("0.1"), Decimal("0.2"), Decimal("0.0115")]
    assert ledger.spent("acme") == Decimal("0.3115")  # 0.1 + 0.2 is 0.3 here, not 0.30000000000000004
    with pytest.raises(ValueError, match="cost must be a finite amount"):
        entry(cost_usd=float("nan"))
    with pytest.raises(ValueError, match="at most 999999999999.999999"):
        entry(cost_usd=Decimal("1e12"))


def test_timestamps_keep_their_instant_and_come_back_in_utc(ledger_url):
    ledger = Ledger(url=ledger_url)
    berlin = timezone(timedelta(hours=1))
    ledger.record(entry(created_at=datetime(2026, 11, 30, 23, 30, tzinfo=berlin)))
    ledger.record(entry(created_at=datetime(2026, 12, 1, 0, 15)))  # naive means UTC
    first, second = ledger.entries(client="acme")
    assert first.created_at == datetime(2026, 11, 30, 22, 30, tzinfo=timezone.utc) and first.created_at.tzinfo is not None
    assert second.created_at == datetime(2026, 12, 1, 0, 15, tzinfo=timezone.utc)
    # The range filter compares instants: 23:30 in Berlin is still November in UTC.
    since = datetime(2026, 12, 1, tzinfo=timezone.utc)
    assert [e.created_at for e in ledger.entries(client="acme", since=since)] == [second.created_at]


def test_ids_are_64_bit_and_text_columns_hold_their_widest_values(ledger_url):
    ledger = Ledger(url=ledger_url)
    big = 2**40
    with ledger.engine.begin() as conn:
        conn.execute(ledger_table.insert().values(**entry().model_dump(), id=big))
    long = dict(client="c" * 64, source_uri="s3://b/" + "k" * 5000, source_key="a" * 64, recipe="r" * 128,
                recipe_key="b" * 64, generation_key="f" * 64, provider="p" * 64, model="m" * 256, state="quarantined",
                reason="x" * 10_000, target="t" * 64, target_key="e" * 64, phash="0" * 64, flow_run_id="9" * 64)
    ledger.record(LedgerEntry(**long))
    ((row_id, row),) = ledger.lineage(str(big), client="acme")
    assert row_id == big
    (wide,) = ledger.entries(client="c" * 64)
    assert wide.model_dump(include=set(long)) == long
    columns = {c["name"]: c["type"] for c in inspect(ledger.engine).get_columns("ledger")}
    if ledger.engine.dialect.name == "postgresql":
        assert str(columns["id"]) == "BIGINT" and str(columns["seed"]) == "BIGINT"
        assert str(columns["cost_usd"]) == "NUMERIC(18, 6)"
        assert columns["created_at"].timezone is True


def test_receipts_are_scoped_by_client_target_and_generation(ledger_url):
    ledger = Ledger(url=ledger_url)
    ledger.record(entry(client="a", target_key="bucket-a", published_url="s3://a/x.png"))
    assert ledger.published_for_generation("a", "bucket-a", "g1").published_url == "s3://a/x.png"
    assert ledger.published_for_generation("b", "bucket-a", "g1") is None  # another client
    assert ledger.published_for_generation("a", "bucket-b", "g1") is None  # another target instance
    assert ledger.published_for_generation("a", "bucket-a", "g2") is None  # another generation


def test_lineage_and_rows_stay_within_the_client(ledger_url):
    ledger = Ledger(url=ledger_url)
    ledger.record(entry(client="a", generation_key="aa" * 32, published_url="https://a/1"))
    ledger.record(entry(client="b", generation_key="bb" * 32, published_url="https://b/1", remote_ids={"post_id": 7}))
    assert ledger.lineage("bb" * 32, client="a") == []
    assert ledger.lineage("https://b/1", client="a") == [] and ledger.lineage("7", client="a") == []
    assert [e.client for _, e in ledger.lineage("bb" * 32, client="b")] == ["b"]
    assert {e.client for _, e in ledger.rows(client="a")} == {"a"}
    assert {e.client for _, e in ledger.rows(client=None)} == {"a", "b"}


def test_job_journal_spend_is_on_record_from_the_reservation(ledger_url):
    ledger = Ledger(url=ledger_url)
    rid = ledger.reserve_job(client="acme", provider="replicate", model="sdxl", amount=0.05, request_key="k1",
                             generation_key="g1", run_key="run-1")
    assert ledger.spent("acme") == Decimal("0.05")  # in flight: the worker may die now, the money is counted
    handle = JobHandle(provider="replicate", job_id="job-1", status_url="https://api.replicate.com/v1/predictions/job-1")
    ledger.job_accepted(rid, handle, cost_usd=0.0115)
    assert ledger.spent("acme") == Decimal("0.0115") and ledger.spent("acme", run_key="run-1") == Decimal("0.0115")
    resumed = ledger.open_job("acme", "k1")
    assert resumed and resumed.handle == handle and resumed.job_id == "job-1"
    assert ledger.open_job("other", "k1") is None  # another client's job is never resumed
    ledger.job_finished(rid, succeeded=True)
    assert ledger.open_job("acme", "k1") is None and ledger.spent("acme") == Decimal("0.0115")
    refused = ledger.reserve_job(client="acme", provider="replicate", model="sdxl", amount=0.05, request_key="k2")
    ledger.job_released(refused, "422: invalid input")
    assert ledger.spent("acme") == Decimal("0.0115")
    assert [j.state for j in ledger.jobs("acme")] == ["succeeded", "released"]


def test_budget_holds_against_concurrent_workers(ledger_url):
    """Eight workers race for a $0.50 month at $0.10 a job: exactly five get through."""
    ledger = Ledger(url=ledger_url)
    ledger.spent("acme")  # migrate once before the race
    barrier = threading.Barrier(8)

    def attempt(i: int) -> bool:
        barrier.wait()
        try:
            Ledger(url=ledger_url).reserve_job(client="acme", provider="p", model=None, amount=0.1,
                                              request_key=f"k{i}", monthly_budget_usd=0.5)
            return True
        except BudgetExceeded:
            return False

    with ThreadPoolExecutor(8) as pool:
        granted = list(pool.map(attempt, range(8)))
    assert granted.count(True) == 5 and ledger.spent("acme") == Decimal("0.5")
    with pytest.raises(BudgetExceeded, match=r"monthly budget exhausted: \$0.50 of \$0.50 spent, next generation costs \$0.10"):
        ledger.reserve_job(client="acme", provider="p", model=None, amount=0.1, request_key="k", monthly_budget_usd=0.5)
    # A run budget counts only that run's jobs; another client is untouched.
    ledger.reserve_job(client="acme", provider="p", model=None, amount=0.2, request_key="r", run_key="run-2", run_budget_usd=0.3)
    with pytest.raises(BudgetExceeded, match="run budget exhausted"):
        ledger.reserve_job(client="acme", provider="p", model=None, amount=0.2, request_key="r", run_key="run-2", run_budget_usd=0.3)
    ledger.reserve_job(client="other", provider="p", model=None, amount=0.1, request_key="k", monthly_budget_usd=0.5)


def test_an_existing_ledger_upgrades_in_place(ledger_url):
    """A ledger written by brandforge 0.1 (32-bit seed, float cost, no version table) is migrated, rows kept."""
    import sqlalchemy as sa

    # The table exactly as brandforge 0.1 declared it (SERIAL id on PostgreSQL).
    old_table = sa.Table(
        "ledger", sa.MetaData(),
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        *(sa.Column(name, sa.String(64)) for name in ("source_key", "recipe_key", "generation_key", "provider",
                                                       "target", "phash", "flow_run_id")),
        sa.Column("client", sa.String(64), nullable=False), sa.Column("source_uri", sa.Text, nullable=False),
        sa.Column("recipe", sa.String(128)), sa.Column("model", sa.String(256)),
        *(sa.Column(name, sa.JSON) for name in ("job_ids", "output_uris", "params", "scores", "timings", "remote_ids")),
        sa.Column("seed", sa.Integer), sa.Column("cost_usd", sa.Float, nullable=False),
        sa.Column("state", sa.String(16), nullable=False), sa.Column("reason", sa.Text), sa.Column("published_url", sa.Text),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    old = create_engine(ledger_url)
    old_table.metadata.create_all(old)
    with old.begin() as conn:
        conn.execute(old_table.insert().values(client="acme", source_uri="file:///old.png", seed=12345, cost_usd=0.0115,
                                               state="published", reason="", created_at=datetime(2026, 11, 2, 9, 5, tzinfo=timezone.utc)))
    old.dispose()
    ledger = Ledger(url=ledger_url)
    (kept,) = ledger.entries(client="acme")
    assert kept.source_uri == "file:///old.png" and kept.seed == 12345 and kept.cost_usd == Decimal("0.0115")
    assert kept.created_at == datetime(2026, 11, 2, 9, 5, tzinfo=timezone.utc)
    ledger.record(entry(seed=2**40))
    assert ledger.entries(client="acme")[-1].seed == 2**40
    with ledger.engine.connect() as conn:
        assert conn.execute(text("SELECT version_num FROM brandforge_ledger_version")).scalar_one() == "0005"


def test_the_password_is_a_secret_not_part_of_the_url(postgres_server):
    """PostgreSQL only: SQLite has no password."""
    ledger_url = new_postgres_database(postgres_server)
    with_password = ledger_url.replace("brandforge@", "brandforge:S3cr3t-PW-4711@")
    ledger = Ledger(url=with_password)
    assert "S3cr3t-PW-4711" not in ledger.url and ledger.password.get_secret_value() == "S3cr3t-PW-4711"
    assert "S3cr3t-PW-4711" not in repr(ledger) and "S3cr3t-PW-4711" not in str(ledger.model_dump())
    ledger.record(entry())  # the engine still gets it (trust auth accepts any password)
    assert len(ledger.entries(client="acme")) == 1


def test_a_published_row_is_marked_withdrawn_once(tmp_path):
    ledger = Ledger(url=f"sqlite:///{tmp_path / 'ledger.db'}")
    mine = ledger.record(entry(source_uri="https://cms/uploads/a.jpg"))
    ledger.record(entry(source_uri="https://cms/uploads/a.jpg", state="failed"))
    ledger.record(entry(client="other", source_uri="https://cms/uploads/a.jpg"))
    assert [i for i, _ in ledger.published_rows_for_sources("acme", ["https://cms/uploads/a.jpg"])] == [mine]
    assert ledger.mark_withdrawn(mine, "Strapi entry.delete of product entry 7: entry 3 deleted")
    assert not ledger.mark_withdrawn(mine, "again")  # idempotent: only a published row changes
    row = dict(ledger.rows(client="acme"))[mine]
    assert row.state == "withdrawn" and row.reason.endswith("entry 3 deleted")
    assert ledger.published_rows_for_sources("acme", ["https://cms/uploads/a.jpg"]) == []
    assert ledger.published_for_generation("acme", "t1", "g1") is None  # no longer a publish to reuse
    assert len(ledger.entries(client="other", state="published")) == 1


def test_state_must_be_known():
    with pytest.raises(ValueError, match="state must be one of published, quarantined, failed"):
        entry(state="done")


def test_orchestration_failure_is_recorded_not_lost(tmp_path):
    import httpx
    from prefect.exceptions import PrefectHTTPStatusError

    from brandforge.models import AssetRef
    from brandforge.tasks.ledger import record_orchestration_failure

    ledger = Ledger(url=f"sqlite:///{tmp_path / 'l.db'}")
    request = httpx.Request("POST", "http://127.0.0.1/api/task_runs/")
    exc = PrefectHTTPStatusError.from_httpx_error(
        httpx.HTTPStatusError("503", request=request, response=httpx.Response(503, request=request))
    )
    outcome = record_orchestration_failure(ledger, AssetRef(client="acme", uri="file:///a.png", name="a.png"), exc)
    assert outcome.state == "failed" and outcome.reason.startswith("orchestration: PrefectHTTPStatusError")
    (row,) = ledger.entries(client="acme")
    assert row.state == "failed" and row.source_uri == "file:///a.png"


def test_a_job_id_answered_twice_is_one_job(ledger_url):
    """A deterministic engine (or a provider deduplicating an idempotent request) answers a rerun with
    the same job id: the journal keeps one job, the second reservation is released."""
    ledger = Ledger(url=ledger_url)
    handle = JobHandle(provider="local", job_id="same-job")
    first = ledger.reserve_job(client="acme", provider="local", model=None, amount=0.02, request_key="k")
    assert ledger.job_accepted(first, handle, 0.02) == first
    ledger.job_finished(first, succeeded=True)
    second = ledger.reserve_job(client="acme", provider="local", model=None, amount=0.02, request_key="k")
    assert ledger.job_accepted(second, handle, 0.02) == first
    assert [j.state for j in ledger.jobs("acme")] == ["submitted", "released"] and ledger.spent("acme") == Decimal("0.02")


def reserve_in_process(url: str, worker: int, start, answers) -> None:
    """One worker process of the race below: four $0.10 reservations against a $0.50 month."""
    ledger = Ledger(url=url)
    ledger.spent("acme")  # connected before the race
    start.wait(timeout=120)
    granted = 0
    for i in range(4):
        try:
            ledger.reserve_job(client="acme", provider="p", model=None, amount=0.1, request_key=f"w{worker}-{i}",
                               monthly_budget_usd=0.5)
            granted += 1
        except BudgetExceeded:
            pass
    answers.put(granted)


def test_budget_holds_across_two_processes(ledger_url):
    """Two worker processes (not threads: no shared memory, no shared lock) race for a $0.50 month
    with eight $0.10 jobs: the database's atomic reservation lets exactly five through."""
    import multiprocessing

    Ledger(url=ledger_url).spent("acme")  # migrated once before the race
    ctx = multiprocessing.get_context("spawn")
    start, answers = ctx.Barrier(2), ctx.Queue()
    workers = [ctx.Process(target=reserve_in_process, args=(ledger_url, w, start, answers)) for w in range(2)]
    for p in workers:
        p.start()
    granted = [answers.get(timeout=180) for _ in workers]
    for p in workers:
        p.join(30)
    assert sum(granted) == 5 and Ledger(url=ledger_url).spent("acme") == Decimal("0.5"), granted


def test_a_republish_marks_the_earlier_row_replaced_and_lineage_follows_the_chain(ledger_url):
    """The same asset (client, source, target) published again: the earlier row becomes `replaced` and points at
    the newer one, in the same write; another target, source or client is untouched."""
    ledger = Ledger(url=ledger_url)
    first = ledger.record(entry(generation_key="g1", output_key="o1", published_url="https://cms/?p=7",
                                remote_ids={"post_id": 7, "media_id": 70}))
    other_target = ledger.record(entry(target_key="t2", output_key="o1"))
    other_source = ledger.record(entry(source_uri="file:///b.png", output_key="o9"))
    other_client = ledger.record(entry(client="rival", output_key="o1"))
    assert ledger.current_publish("acme", "t1", "file:///a.png")[0] == first
    ledger.record(entry(generation_key="g1", output_key="o2", state="failed"))  # a failure replaces nothing
    second = ledger.record(entry(generation_key="g1", output_key="o2", published_url="https://cms/?p=7",
                                 remote_ids={"post_id": 7, "media_id": 71}))
    third = ledger.record(entry(generation_key="g3", output_key="o3", published_url="https://cms/?p=7",
                                remote_ids={"post_id": 7, "media_id": 72}))
    rows = dict(ledger.rows())
    assert (rows[first].state, rows[first].replaced_by) == ("replaced", second)
    assert (rows[second].state, rows[second].replaced_by) == ("replaced", third)
    assert rows[third].state == "published" and rows[third].replaced_by is None
    assert {rows[i].state for i in (other_target, other_source, other_client)} == {"published"}
    assert ledger.current_publish("acme", "t1", "file:///a.png")[0] == third
    assert ledger.published_for_generation("acme", "t1", "o1") is None  # a replaced output is published again
    assert ledger.finished("acme", "s1", "r1").output_key == "o3"
    # The chain from any of its rows: by the old row's id, the old image's remote id, the new generation key.
    for ref in (str(first), "70", "g3"):
        assert {first, second, third} <= {i for i, _ in ledger.lineage(ref, client="acme")}, ref


def test_an_outcome_row_is_written_again_when_the_database_is_briefly_unavailable(tmp_path):
    """`record_outcome` is no task run of its own: it asks a locked or unreachable database again itself."""
    from sqlalchemy.exc import OperationalError

    from brandforge.tasks.ledger import record_outcome

    ledger = Ledger(url=f"sqlite:///{tmp_path / 'ledger.db'}")
    real = ledger.record
    calls = []

    def flaky(entry):
        calls.append(entry)
        if len(calls) == 1:
            raise OperationalError("INSERT", {}, Exception("database is locked"))
        return real(entry)

    object.__setattr__(ledger, "record", flaky)
    entry = LedgerEntry(client="demo", source_uri="file:///a.png", state="failed", reason="load: nope")
    row_id = record_outcome(ledger, entry, delay_s=0.0)
    assert len(calls) == 2 and row_id == 1
    assert [e.reason for e in ledger.entries("demo")] == ["load: nope"]

    object.__setattr__(ledger, "record", lambda e: (_ for _ in ()).throw(OperationalError("INSERT", {}, Exception("down"))))
    with pytest.raises(OperationalError):
        record_outcome(ledger, entry, attempts=2, delay_s=0.0)
