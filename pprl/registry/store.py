"""The registry's storage: SQLAlchemy Core tables, one transaction per change.

The registry holds only what the bureau may hold: CLKs, per-record Paillier
ciphertexts, random tokens and entity numbers; never an identifier or a
plaintext score. A location is a file path (SQLite, the embedded default) or
a database URL (``postgresql://user@host/db``, through psycopg 3). Every
update runs in one transaction: it reads the registry, plans the change
(:func:`pprl.protocol.registry.plan_update`) and writes it, so a crash leaves
the registry as it was before or after, never half-updated.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection, Engine

from pprl.documents import Answer, Card, Query, Submission, document_hash, now
from pprl.errors import KeyFormatError, PolicyError, PPRLError, RegistryError
from pprl.protocol.audit import GENESIS, make_entry
from pprl.protocol.identity import PartyKey
from pprl.protocol.link import LinkOptions
from pprl.protocol.query import AnswerPolicy, Found, build_answer, check_query
from pprl.protocol.registry import RegistryView, UpdatePlan, plan_update

__all__ = ["FORMAT", "Registry", "RegistryStats", "UpdateReport", "registry_url", "sqlite_pragmas"]

#: The registry format this pprl reads and writes (refuses others).
FORMAT = "pprl-registry-1"

_md = sa.MetaData()
_meta = sa.Table(
    "pprl_meta", _md,
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
)
_entities = sa.Table(
    "pprl_entities", _md,
    sa.Column("number", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("created", sa.String(40), nullable=False),
    sa.Column("updated", sa.String(40), nullable=False),
)
_records = sa.Table(
    "pprl_records", _md,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
    sa.Column("platform", sa.String(64), nullable=False),
    sa.Column("token", sa.String(64), nullable=False),
    sa.Column("entity", sa.BigInteger, sa.ForeignKey("pprl_entities.number"), nullable=False, index=True),
    sa.Column("clk", sa.LargeBinary, nullable=False),
    sa.Column("ciphertext", sa.LargeBinary, nullable=True),
    sa.Column("submission", sa.String(64), nullable=False),
    sa.Column("pseudonym", sa.LargeBinary(32), nullable=True, index=True),
    sa.UniqueConstraint("platform", "token", name="pprl_records_platform_token"),
)
_submissions = sa.Table(
    "pprl_submissions", _md,
    sa.Column("platform", sa.String(64), primary_key=True),
    sa.Column("hash", sa.String(64), nullable=False),
    sa.Column("created", sa.String(40), nullable=False),
    sa.Column("records", sa.Integer, nullable=False),
    sa.Column("applied", sa.String(40), nullable=False),
)
_updates = sa.Table(
    "pprl_updates", _md,
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("time", sa.String(40), nullable=False),
    sa.Column("platform", sa.String(64), nullable=False),
    sa.Column("submission", sa.String(64), nullable=False),
    sa.Column("records", sa.Integer, nullable=False),
    sa.Column("new", sa.Integer, nullable=False),
    sa.Column("updated", sa.Integer, nullable=False),
    sa.Column("removed", sa.Integer, nullable=False),
    sa.Column("unchanged", sa.Integer, nullable=False),
    sa.Column("threshold", sa.Float, nullable=False),
    sa.Column("threshold_method", sa.String(16), nullable=False),
)


_queries = sa.Table(
    "pprl_queries", _md,
    sa.Column("hash", sa.String(64), primary_key=True),
    sa.Column("time", sa.String(40), nullable=False),
    sa.Column("lender", sa.String(64), nullable=False, index=True),
    sa.Column("purpose", sa.String(32), nullable=False),
    sa.Column("applicants", sa.Integer, nullable=False),
    sa.Column("found", sa.Integer, nullable=False),
    sa.Column("answer", sa.String(64), nullable=False),
)
_consents = sa.Table(
    "pprl_consents", _md,
    sa.Column("reference", sa.String(64), primary_key=True),
    sa.Column("lender", sa.String(64), nullable=False),
    sa.Column("query", sa.String(64), nullable=False),
    sa.Column("expires", sa.String(40), nullable=False),
)
_access = sa.Table(
    "pprl_access", _md,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
    sa.Column("entity", sa.BigInteger, nullable=False, index=True),
    sa.Column("time", sa.String(40), nullable=False),
    sa.Column("lender", sa.String(64), nullable=False),
    sa.Column("purpose", sa.String(32), nullable=False),
    sa.Column("query", sa.String(64), nullable=False),
)
_quota = sa.Table(
    "pprl_quota", _md,
    sa.Column("lender", sa.String(64), primary_key=True),
    sa.Column("day", sa.String(10), primary_key=True),
    sa.Column("applicants", sa.BigInteger, nullable=False),
)
_refusals = sa.Table(
    "pprl_refusals", _md,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
    sa.Column("time", sa.String(40), nullable=False),
    sa.Column("lender", sa.String(64), nullable=False),
    sa.Column("query", sa.String(64), nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
)


_log = sa.Table(
    "pprl_log", _md,
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("hash", sa.String(64), nullable=False),
    sa.Column("entry", sa.Text, nullable=False),
)


def registry_url(location: str | os.PathLike[str]) -> str:
    """The SQLAlchemy URL of a registry location: a database URL as given (postgresql via psycopg 3),
    anything else a SQLite file path."""
    text = os.fspath(location)
    if "://" in text:
        if text.startswith("postgresql://") or text.startswith("postgres://"):
            text = "postgresql+psycopg://" + text.split("://", 1)[1]
        return text
    return "sqlite:///" + str(Path(text).resolve())


@dataclass(frozen=True)
class UpdateReport:
    """What one submission changed: entity counts, records, the threshold used."""

    platform: str
    submission: str
    records: int
    new: int
    updated: int
    removed: int
    unchanged: int
    threshold: float
    threshold_method: str


@dataclass(frozen=True)
class RegistryStats:
    """What the registry holds: entities, records per platform, entities by number of platforms, recent updates."""

    entities: int
    records: dict[str, int]
    by_platforms: dict[int, int]
    submissions: dict[str, dict[str, Any]] = field(default_factory=dict)
    updates: list[dict[str, Any]] = field(default_factory=list)
    parameters: dict[str, Any] | None = None


class Registry:
    """A registry at ``location`` (created on first use). Use as a context manager, or call :meth:`close`."""

    def __init__(self, location: str | os.PathLike[str]) -> None:
        self.location = os.fspath(location)
        url = registry_url(location)
        if url.startswith("sqlite:///"):
            Path(url[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
        try:
            self._engine: Engine = sa.create_engine(url, future=True)
            if self._engine.dialect.name == "sqlite":
                sa.event.listen(self._engine, "connect", sqlite_pragmas)
            with self._engine.begin() as conn:
                _md.create_all(conn)
                found = conn.execute(sa.select(_meta.c.value).where(_meta.c.key == "format")).scalar()
                if found is None:
                    conn.execute(sa.insert(_meta).values(key="format", value=FORMAT))
                    conn.execute(sa.insert(_meta).values(key="next_entity", value="1"))
                elif found != FORMAT:
                    raise RegistryError(f"{self.display}: is a '{found}' registry; this pprl reads {FORMAT}")
        except sa.exc.SQLAlchemyError as exc:
            raise RegistryError(f"{self.display}: cannot open the registry ({_reason(exc)})") from None
        except ModuleNotFoundError as exc:
            raise RegistryError(
                f"{self.display}: needs the {exc.name} package: pip install 'pprl[postgres]'"
            ) from None

    @property
    def display(self) -> str:
        """The location for messages, without a password."""
        try:
            return sa.engine.make_url(registry_url(self.location)).render_as_string(hide_password=True)
        except sa.exc.ArgumentError:
            return self.location

    def __enter__(self) -> Registry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._engine.dispose()

    # -- reading ------------------------------------------------------------------------------

    def view(self) -> RegistryView:
        """The registry as an update sees it (parameters, every record's platform, entity and CLK)."""
        with self._engine.connect() as conn:
            return _view(conn)

    def stats(self) -> RegistryStats:
        """Counts for people and reports (no CLK, no ciphertext)."""
        with self._engine.connect() as conn:
            entities = conn.execute(sa.select(sa.func.count()).select_from(_entities)).scalar_one()
            records = {
                p: int(n) for p, n in conn.execute(
                    sa.select(_records.c.platform, sa.func.count()).group_by(_records.c.platform)
                ).all()
            }
            per_entity = (
                sa.select(_records.c.entity, sa.func.count(sa.distinct(_records.c.platform)).label("k"))
                .group_by(_records.c.entity).subquery()
            )
            by = {int(k): int(n) for k, n in conn.execute(
                sa.select(per_entity.c.k, sa.func.count()).group_by(per_entity.c.k)
            ).all()}
            subs = {
                row.platform: {"hash": row.hash, "created": row.created, "records": row.records, "applied": row.applied}
                for row in conn.execute(sa.select(_submissions)).all()
            }
            updates = [dict(row._mapping) for row in conn.execute(
                sa.select(_updates).order_by(_updates.c.seq.desc()).limit(20)
            ).all()]
            return RegistryStats(int(entities), dict(sorted(records.items())), dict(sorted(by.items())), subs,
                                 updates, _parameters(conn))

    def members(self) -> dict[str, list[tuple[str, str]]]:
        """Entity id -> [(platform, token)], for evaluation and tests (the registry's own view, no PII)."""
        with self._engine.connect() as conn:
            out: dict[str, list[tuple[str, str]]] = {}
            rows = conn.execute(
                sa.select(_records.c.entity, _records.c.platform, _records.c.token).order_by(_records.c.entity)
            ).all()
            for e, p, t in rows:
                out.setdefault(entity_id(int(e)), []).append((p, t))
            return out

    def find(self, pseudonyms: Sequence[bytes]) -> dict[bytes, str]:
        """The entity id of each pseudonym the registry holds (pseudonyms it does not hold are left out)."""
        wanted = [bytes(p) for p in pseudonyms]
        out: dict[bytes, str] = {}
        with self._engine.connect() as conn:
            for start in range(0, len(wanted), 1000):
                rows = conn.execute(
                    sa.select(_records.c.pseudonym, _records.c.entity)
                    .where(_records.c.pseudonym.in_(wanted[start : start + 1000]))
                ).all()
                for p, e in rows:
                    out[bytes(p)] = entity_id(int(e))
        return out

    def answer(self, me: PartyKey, query: Query, lenders: Sequence[Card], policy: AnswerPolicy) -> Answer:
        """Answer a lender's query in one transaction, or refuse it and record the refusal.

        Refused, with nothing answered: a query that fails :func:`pprl.protocol.query.check_query`,
        one already answered, a consent already used, or one over the lender's daily quota. An
        answered query records who asked, when and for what purpose against every entity found
        (the entity's access history), the consents used, and the query itself.
        """
        if me.role != "bureau":
            raise KeyFormatError(f"only the bureau answers queries; '{me.name}' is a {me.role}")
        try:
            try:
                with self._engine.begin() as conn:
                    return _answer(conn, me, query, lenders, policy)
            except sa.exc.SQLAlchemyError as exc:
                raise RegistryError(f"{self.display}: the query was not answered ({_reason(exc)})") from None
        except PPRLError as exc:
            lender = query.signer.name if query.signer is not None else query.header.lender
            reason = str(exc).splitlines()[0].split(": ", 1)[-1][:500]  # without the file name
            with self._engine.begin() as conn:
                conn.execute(sa.insert(_refusals).values(time=now(), lender=lender, query=query.hash, reason=reason))
                _log_append(conn, me, "query", {
                    "bureau": me.name, "lender": lender, "purpose": query.header.purpose, "query_hash": query.hash,
                    "answer_hash": None, "applicants": query.header.count, "found": 0, "outcome": "refused",
                    "reason": reason, "contributions": {},
                    "consents": sorted({str(i.get("consent", {}).get("reference", "")) for i in query.payload.items
                                        if isinstance(i.get("consent"), dict)} - {""}),
                    "expiries": _expiries(query),
                })
            raise

    def access(self, entity: str) -> list[dict[str, Any]]:
        """Who asked about ``entity``, when and for what purpose (for the person's own report)."""
        number = int(entity.lstrip("E"))
        with self._engine.connect() as conn:
            rows = conn.execute(sa.select(_access).where(_access.c.entity == number).order_by(_access.c.id)).all()
            return [{"time": r.time, "lender": r.lender, "purpose": r.purpose, "query": r.query} for r in rows]

    def log(self) -> list[dict[str, Any]]:
        """The bureau's audit log: one signed, hash-chained entry per registry update and per query
        (answered or refused), in order; check it with :func:`pprl.protocol.audit.verify_entries`."""
        with self._engine.connect() as conn:
            return [json.loads(r.entry) for r in conn.execute(sa.select(_log).order_by(_log.c.seq)).all()]

    def refusals(self) -> list[dict[str, Any]]:
        """Every refused query: time, lender, query hash, reason."""
        with self._engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(sa.select(_refusals).order_by(_refusals.c.id)).all()]

    # -- changing -----------------------------------------------------------------------------

    def update(
        self, submissions: Sequence[Submission], options: LinkOptions, cards: Sequence[Card],
        me: PartyKey | None = None, *, step: Callable[[int, int, str], None] | None = None,
        also: Callable[[Connection, list[UpdateReport]], None] | None = None,
        stage: Callable[[str], None] | None = None,
    ) -> list[UpdateReport]:
        """Replace each submission's platform contribution, in order, in one transaction for them all.

        Each submission is planned against the registry as the ones before it
        left it; if any is refused, nothing is written. With ``me`` (the bureau)
        each update also goes into the registry's signed log. ``step(i, n, platform)``
        is called before the i-th of n submissions is planned (progress), ``stage(what)`` as each stage of
        it begins (reading the registry, verifying, comparing, assigning, writing);
        ``also(conn, reports)`` runs inside the same transaction at the end (a
        service marks its job done there, so the two commit together).
        """
        if me is not None and me.role != "bureau":
            raise KeyFormatError(f"only the bureau keeps the registry; '{me.name}' is a {me.role}")
        reports = []
        try:
            with self._engine.begin() as conn:
                _lock(conn)
                for i, doc in enumerate(submissions):
                    if step is not None:
                        step(i, len(submissions), str(doc.header.platform))
                    if stage is not None:
                        stage("reading the registry")
                    plan = plan_update(_view(conn), doc, options, cards, stage)
                    if stage is not None:
                        stage(f"writing {len(plan.add):,} records")
                    _apply(conn, plan)
                    if me is not None:
                        _log_append(conn, me, "registry-update", {
                            "bureau": me.name, "platform": plan.platform, "submission_hash": plan.submission_hash,
                            "records": len(plan.add), "new": plan.new, "updated": plan.updated,
                            "removed": plan.removed, "unchanged": plan.unchanged,
                        })
                    reports.append(UpdateReport(
                        plan.platform, plan.submission_hash, len(plan.add), plan.new, plan.updated, plan.removed,
                        plan.unchanged, plan.threshold, plan.threshold_method,
                    ))
                if also is not None:
                    also(conn, reports)
        except sa.exc.SQLAlchemyError as exc:
            raise RegistryError(f"{self.display}: the update was not applied ({_reason(exc)})") from None
        return reports


def sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    """Every SQLite connection: write-ahead log (readers never wait for the writer), wait up to 60 s for another
    writer instead of failing at once, and sync every commit to disk."""
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=60000")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.close()


def entity_id(number: int) -> str:
    """The stable id of registry entity ``number``."""
    return f"E{number:09d}"


def _reason(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__


def _lock(conn: Connection) -> None:
    """Serialise writers: take the counter row for update (PostgreSQL); SQLite locks the file on first write."""
    if conn.dialect.name != "sqlite":
        conn.execute(sa.select(_meta.c.value).where(_meta.c.key == "next_entity").with_for_update())


def _meta_value(conn: Connection, key: str) -> str | None:
    value = conn.execute(sa.select(_meta.c.value).where(_meta.c.key == key)).scalar()
    return None if value is None else str(value)


def _parameters(conn: Connection) -> dict[str, Any] | None:
    value = conn.execute(sa.select(_meta.c.value).where(_meta.c.key == "parameters")).scalar()
    return None if value is None else dict(json.loads(value))


def _view(conn: Connection) -> RegistryView:
    params = _parameters(conn)
    rows = conn.execute(
        sa.select(_records.c.id, _records.c.platform, _records.c.entity, _records.c.clk).order_by(_records.c.id)
    ).all()
    width = int(params["clk_bytes"]) if params else 0
    if rows:
        clks = np.frombuffer(b"".join(bytes(r.clk) for r in rows), dtype=np.uint8).reshape(len(rows), width)
    else:
        clks = np.zeros((0, width), dtype=np.uint8)
    applied = {r.platform: (r.hash, r.created) for r in conn.execute(sa.select(_submissions)).all()}
    return RegistryView(
        parameters=params,
        platforms=np.array([r.platform for r in rows], dtype=object),
        record_ids=np.array([r.id for r in rows], dtype=np.int64),
        entities=np.array([r.entity for r in rows], dtype=np.int64),
        clks=clks,
        applied=applied,
        pseudonym_kind=_meta_value(conn, "pseudonym_kind"),
    )


def _answer(conn: Connection, me: PartyKey, query: Query, lenders: Sequence[Card], policy: AnswerPolicy) -> Answer:
    lender = check_query(query, lenders)
    if conn.execute(sa.select(_queries.c.hash).where(_queries.c.hash == query.hash)).first() is not None:
        raise PolicyError(f"{query.source}: this query was already answered (replayed)")
    references = [item["consent"]["reference"] for item in query.payload.items]
    for start in range(0, len(references), 1000):
        used = conn.execute(sa.select(_consents.c.reference).where(
            _consents.c.reference.in_(references[start : start + 1000]))).first()
        if used is not None:
            raise PolicyError(f"{query.source}: a consent was already used (replayed); nothing is answered")
    time = now()
    asked = _count_against_quota(conn, lender.name, time[:10], query.header.count)
    if asked > policy.daily_quota:  # the transaction rolls back: the count goes back too
        raise PolicyError(f"{query.source}: lender '{lender.name}' would ask about {asked} "
                          f"applicants today, over its daily quota of {policy.daily_quota}")
    pseudonyms = [bytes.fromhex(item["pseudonym"]) for item in query.payload.items]
    entity_of: dict[bytes, int] = {}
    for start in range(0, len(pseudonyms), 1000):
        rows = conn.execute(sa.select(_records.c.pseudonym, _records.c.entity).where(
            _records.c.pseudonym.in_(pseudonyms[start : start + 1000])).order_by(_records.c.entity)).all()
        for p, e in rows:
            entity_of.setdefault(bytes(p), int(e))
    wanted = sorted(set(entity_of.values()))
    records: dict[int, list[tuple[str, bytes]]] = {}
    for start in range(0, len(wanted), 1000):
        recs = conn.execute(sa.select(_records.c.entity, _records.c.platform, _records.c.ciphertext).where(
            _records.c.entity.in_(wanted[start : start + 1000])).order_by(_records.c.id)).all()
        for e, platform, ct in recs:
            if ct is not None:
                records.setdefault(int(e), []).append((platform, bytes(ct)))
    found = [Found(records.get(entity_of[p], [])) if p in entity_of else Found() for p in pseudonyms]
    params = _parameters(conn) or {}
    answer = build_answer(me, query, lender, found, params, policy)
    conn.execute(sa.insert(_queries).values(hash=query.hash, time=time, lender=lender.name,
                                            purpose=query.header.purpose, applicants=query.header.count,
                                            found=answer.header.found, answer=answer.hash))
    if query.payload.items:
        conn.execute(sa.insert(_consents), [
            {"reference": item["consent"]["reference"], "lender": lender.name, "query": query.hash,
             "expires": item["consent"]["expires"]} for item in query.payload.items
        ])
    _log_append(conn, me, "query", {
        "bureau": me.name, "lender": lender.name, "purpose": query.header.purpose, "query_hash": query.hash,
        "answer_hash": answer.hash, "applicants": query.header.count, "found": answer.header.found,
        "outcome": "answered", "contributions": answer.header.contributions, "consents": references,
        "expiries": _expiries(query),
    })
    touched = [entity_of[p] for p, status in zip(pseudonyms, answer.payload.status) if status == "found"]
    if touched:
        conn.execute(sa.insert(_access), [
            {"entity": e, "time": time, "lender": lender.name, "purpose": query.header.purpose, "query": query.hash}
            for e in touched
        ])
    return answer


def _count_against_quota(conn: Connection, lender: str, day: str, count: int) -> int:
    """Add ``count`` applicants to the lender's tally for ``day`` (UTC) and return the new tally.

    One row per lender and day, incremented under the row's write lock, so concurrent answers count right and
    the check costs the same at the day's last query as at its first. A registry from before the tally
    starts each lender's day from the queries already recorded that day.
    """
    key = (_quota.c.lender == lender) & (_quota.c.day == day)
    if conn.execute(sa.select(_quota.c.applicants).where(key)).first() is None:
        earlier = conn.execute(sa.select(sa.func.coalesce(sa.func.sum(_queries.c.applicants), 0)).where(
            (_queries.c.lender == lender) & (sa.func.substr(_queries.c.time, 1, 10) == day))).scalar_one()
        insert = (sqlite_insert if conn.dialect.name == "sqlite" else postgresql_insert)(_quota)
        conn.execute(insert.values(lender=lender, day=day, applicants=int(earlier)).on_conflict_do_nothing())
    conn.execute(sa.update(_quota).where(key).values(applicants=_quota.c.applicants + count))
    return int(conn.execute(sa.select(_quota.c.applicants).where(key)).scalar_one())


def _expiries(query: Query) -> list[str]:
    """The day each consent of a query expires (UTC dates; no applicant, no reference)."""
    out = []
    for item in query.payload.items:
        consent = item.get("consent")
        if isinstance(consent, dict) and isinstance(consent.get("expires"), str):
            out.append(consent["expires"][:10])
    return sorted(out)


def _log_append(conn: Connection, me: PartyKey, event: str, details: dict[str, Any]) -> None:
    """Append a signed entry to the registry's own audit log, in the caller's transaction."""
    last = conn.execute(sa.select(_log.c.seq, _log.c.hash).order_by(_log.c.seq.desc()).limit(1)).first()
    seq, prev = (int(last.seq) + 1, str(last.hash)) if last is not None else (1, GENESIS)
    entry = make_entry(seq, prev, me.identity, me.card, event, details)
    conn.execute(sa.insert(_log).values(seq=seq, hash=document_hash(entry), entry=json.dumps(entry, sort_keys=True)))


def _apply(conn: Connection, plan: UpdatePlan) -> None:
    time = now()
    if _parameters(conn) is None:
        conn.execute(sa.insert(_meta).values(key="parameters", value=json.dumps(plan.parameters, sort_keys=True)))
    if plan.pseudonym_kind is not None and _meta_value(conn, "pseudonym_kind") is None:
        conn.execute(sa.insert(_meta).values(key="pseudonym_kind", value=plan.pseudonym_kind))
    next_entity = int(conn.execute(sa.select(_meta.c.value).where(_meta.c.key == "next_entity")).scalar_one())
    numbers = {-(k + 1): next_entity + k for k in range(plan.new_entities)}
    if plan.new_entities:
        conn.execute(sa.insert(_entities), [{"number": n, "created": time, "updated": time} for n in numbers.values()])
        conn.execute(sa.update(_meta).where(_meta.c.key == "next_entity")
                     .values(value=str(next_entity + plan.new_entities)))
    if len(plan.remove):
        ids = [int(i) for i in plan.remove]
        for start in range(0, len(ids), 10_000):
            conn.execute(sa.delete(_records).where(_records.c.id.in_(ids[start : start + 10_000])))
    rows = [
        {"platform": plan.platform, "token": r.token, "entity": numbers.get(r.entity, r.entity), "clk": r.clk,
         "ciphertext": r.ciphertext, "submission": plan.submission_hash, "pseudonym": r.pseudonym}
        for r in plan.add
    ]
    for start in range(0, len(rows), 10_000):
        conn.execute(sa.insert(_records), rows[start : start + 10_000])
    touched = sorted({r.entity for r in plan.add if r.entity > 0})
    for start in range(0, len(touched), 10_000):
        conn.execute(sa.update(_entities).where(_entities.c.number.in_(touched[start : start + 10_000]))
                     .values(updated=time))
    if plan.removed_entities:
        for start in range(0, len(plan.removed_entities), 10_000):
            chunk = plan.removed_entities[start : start + 10_000]
            conn.execute(sa.delete(_entities).where(_entities.c.number.in_(chunk)))
    conn.execute(sa.delete(_submissions).where(_submissions.c.platform == plan.platform))
    conn.execute(sa.insert(_submissions).values(
        platform=plan.platform, hash=plan.submission_hash, created=plan.created, records=len(plan.add), applied=time,
    ))
    conn.execute(sa.insert(_updates).values(
        time=time, platform=plan.platform, submission=plan.submission_hash, records=len(plan.add), new=plan.new,
        updated=plan.updated, removed=plan.removed, unchanged=plan.unchanged, threshold=plan.threshold,
        threshold_method=plan.threshold_method,
    ))
