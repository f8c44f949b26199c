"""The bureau's first step: verify submissions and link platforms' encodings into entities.

The bureau sees CLKs, opaque tokens and ciphertexts; it never holds the
linkage secret or the Paillier private key. Every submission is verified
(signature against the platforms' cards, one schema, one linkage secret, one
Paillier key) before any of it is used. Linking picks its Dice threshold from
the data unless told one and blocks with keyed LSH when that pays. Design:
docs/design.md (automatic threshold, LSH blocking).
"""

from __future__ import annotations

import contextlib
import csv
import gc
import io
import itertools
import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from pprl.documents import (
    Card,
    Entity,
    Linkage,
    LinkageHeader,
    LinkagePayload,
    LinkedSubmission,
    Submission,
    Table,
    canonical_json,
    seal,
    verify,
)
from pprl.errors import DocumentError, KeyMismatchError, OptionError, PolicyError
from pprl.matching.blocking import (
    BlockingPlan,
    BlockingReport,
    derive_seed,
    lsh_candidates,
    lsh_estimates,
    plan_blocking,
)
from pprl.matching.dice.similarity import Candidates, find_candidates
from pprl.matching.solve import greedy_solve
from pprl.matching.thresholds import BestMatchSample, ThresholdChoice, best_match_sample, choose_threshold
from pprl.protocol.identity import PartyKey

if TYPE_CHECKING:  # imported where used: linking alone needs neither the OPRF nor Paillier
    from pprl.crypto.paillier.vector import PaillierPublicKey
    from pprl.engine import Engine

__all__ = [
    "BLOCKING_MODES",
    "CANDIDATE_COLUMNS",
    "SAMPLE_COLUMNS",
    "SAMPLE_SIZE",
    "LinkOptions",
    "LinkReport",
    "Linked",
    "VerifiedSubmission",
    "CandidateSearch",
    "check_consistent",
    "link_submissions",
    "open_linkage",
    "open_submission",
    "paillier_key_of",
    "search_candidates",
]

#: Records sampled (per run) for the automatic threshold and the blocking design.
SAMPLE_SIZE = 1000
BLOCKING_MODES = ("auto", "lsh", "none")
#: Columns of the linkage payload's candidate table (CSV text, one row per candidate pair).
CANDIDATE_COLUMNS = ("platform_a", "token_a", "platform_b", "token_b", "similarity")
#: Columns of the payload's sample table: a sampled record's best and second-best match on another platform.
SAMPLE_COLUMNS = ("platform", "token", "other_platform", "partner_token", "best", "second_best")


@dataclass(frozen=True)
class VerifiedSubmission:
    """A submission whose signature and shape were checked, with its encodings as an array."""

    doc: Submission
    platform: str
    clks: np.ndarray = field(repr=False)

    @property
    def source(self) -> str:
        return self.doc.source

    @property
    def tokens(self) -> list[str]:
        return self.doc.payload.tokens

    @property
    def hash(self) -> str:
        return self.doc.hash


def open_submission(doc: Submission, cards: Sequence[Card]) -> VerifiedSubmission:
    """Verify one submission (signed by a platform among ``cards``) and check its counts agree."""
    source = doc.source
    signer = verify(doc, cards, source=source, role="platform")
    header, payload = doc.header, doc.payload
    if header.platform != signer.name:
        raise DocumentError(f"{source}: header names '{header.platform}' but '{signer.name}' signed it")
    if header.score_columns:
        if not isinstance(header.packing, dict):
            raise DocumentError(f"{source}: scores without a packing spec")
        if payload.scores_packed is None:
            raise DocumentError(f"{source}: submission is missing header or payload fields")
    n, width, tokens = header.records, header.clk_bytes, payload.tokens
    if len(tokens) != n or len(set(tokens)) != n or width <= 0 or len(payload.clks) != n * width:
        raise DocumentError(f"{source}: record counts, tokens and encodings disagree")
    if (payload.pseudonyms is None) != (header.pseudonym_kind is None):
        raise DocumentError(f"{source}: pseudonyms and their kind come together")
    if payload.pseudonyms is not None:
        from pprl.crypto.oprf import PSEUDONYM_BYTES

        if len(payload.pseudonyms) != n * PSEUDONYM_BYTES:
            raise DocumentError(f"{source}: pseudonyms are not {PSEUDONYM_BYTES} bytes per record")
    clks = np.frombuffer(payload.clks, dtype=np.uint8).reshape(n, width)
    return VerifiedSubmission(doc=doc, platform=signer.name, clks=clks)


def check_consistent(subs: Sequence[VerifiedSubmission]) -> None:
    """Refuse submissions from one platform twice, of different runs, or under different schemas, secrets, keys or
    packings."""
    if not subs:
        raise DocumentError("no submissions given")
    first = subs[0]
    seen: dict[str, str] = {}
    for s in subs:
        if s.platform in seen:
            raise DocumentError(f"{s.source}: a second submission from '{s.platform}' (first: {seen[s.platform]})")
        seen[s.platform] = s.source
        if s.doc.header.run != first.doc.header.run:
            runs = [f"run '{x.doc.header.run}'" if x.doc.header.run else "no run" for x in (s, first)]
            raise PolicyError(f"{s.source}: made for {runs[0]}, {first.source} for {runs[1]}; submissions of one "
                              "linkage are made for one run")
        for field_name, what in [
            ("schema_hash", "linkage schema"),
            ("linkage_key_id", "linkage secret"),
            ("clk_bytes", "encoding length"),
        ]:
            if getattr(s.doc.header, field_name) != getattr(first.doc.header, field_name):
                raise KeyMismatchError(f"{s.source}: uses a different {what} than {first.source}")
    keys = {s.doc.header.paillier_fingerprint for s in subs} - {None}
    if len(keys) > 1:
        raise KeyMismatchError(f"{subs[-1].source}: submissions are encrypted under different Paillier keys")
    packings = {canonical_json(s.doc.header.packing) for s in subs if s.doc.header.packing is not None}
    if len(packings) > 1:
        raise KeyMismatchError(f"{subs[-1].source}: submissions pack their scores differently")


def paillier_key_of(sub: VerifiedSubmission) -> PaillierPublicKey:
    """The Paillier public key a submission's scores are under, checked against its fingerprint."""
    from pprl.crypto.paillier.vector import PaillierPublicKey

    header = sub.doc.header
    if header.paillier_key is None:
        raise KeyMismatchError(f"{sub.source}: carries no Paillier key")
    key = PaillierPublicKey.from_dict(header.paillier_key)
    if key.fingerprint != header.paillier_fingerprint:
        raise KeyMismatchError(f"{sub.source}: Paillier key does not match its fingerprint")
    return key


def open_linkage(doc: Linkage, trusted: Sequence[Card]) -> Linkage:
    """Verify a linkage document (signed by a bureau among ``trusted``)."""
    verify(doc, trusted, source=doc.source, role="bureau")
    return doc


_RUN_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._:-")


def check_run(run: str) -> str:
    """A run id: 1-64 letters, digits and . _ : - (OptionError otherwise)."""
    if not isinstance(run, str) or not 1 <= len(run) <= 64 or not set(run) <= _RUN_CHARS:
        raise OptionError("{run} is 1 to 64 letters, digits and . _ : -", "run")
    return run


@dataclass(frozen=True)
class LinkOptions:
    """How the bureau links; checked once, here.

    Attributes:
        threshold: Dice similarity in (0, 1], or None to choose it from the data ("auto").
        blocking: "auto" (LSH when it is estimated to pay at pair completeness 0.99), "lsh" or "none".
        sample_size: records sampled for the automatic threshold and the blocking design.
        workers: processes for the comparisons (None: all cores).
        progress: show progress bars.
        run: the run every submission must have been made for (a submission replayed from another run,
            or made without one, is refused).
        engine: where the comparisons run (:mod:`pprl.engine`, e.g. a Dask cluster); None: in this process.
            The candidates, and so the linkage, are the same.
    """

    threshold: float | None = None
    blocking: str = "auto"
    sample_size: int = SAMPLE_SIZE
    workers: int | None = None
    progress: bool = False
    run: str | None = None
    engine: Engine | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.run is not None:
            check_run(self.run)
        t = self.threshold
        if t is not None and (isinstance(t, bool) or not isinstance(t, (int, float)) or not 0.0 < float(t) <= 1.0):
            raise OptionError(f"{{threshold}} {t} must be 'auto' or a number in (0, 1]", "threshold")
        if self.blocking not in BLOCKING_MODES:
            raise OptionError(f"{{blocking}} '{self.blocking}' must be one of auto, lsh, none", "blocking")
        if isinstance(self.sample_size, bool) or not isinstance(self.sample_size, int) or self.sample_size < 1:
            raise OptionError("{sample_size} must be a positive integer", "sample_size")

    @classmethod
    def parse_threshold(cls, threshold: float | str) -> float | None:
        """None for "auto", else the number (OptionError for anything outside (0, 1])."""
        if isinstance(threshold, str):
            if threshold.strip().lower() == "auto":
                return None
            try:
                return float(threshold)
            except ValueError:
                raise OptionError(f"{{threshold}} '{threshold}' must be 'auto' or a number in (0, 1]",
                                  "threshold") from None
        return threshold


@dataclass(frozen=True)
class LinkReport:
    """The figures the link report prints."""

    entities: int
    candidate_pairs: int
    linked_records: int
    threshold: float = 0.0
    threshold_method: str = "fixed"
    threshold_reason: str = ""
    blocking: str = "none"
    blocking_reason: str = ""
    bands: int = 0
    bits_per_band: int = 0
    comparisons: int = 0
    pairs_total: int = 0
    reduction_ratio: float = 0.0
    estimated_pair_completeness: float | None = None
    sample_pair_completeness: float | None = None


@dataclass(frozen=True)
class Linked:
    """What linking gives: the signed linkage and its report."""

    linkage: Linkage
    report: LinkReport


def _csv_text(rows: Iterable[list[Any]]) -> str:
    """Rows as CSV text: one JSON string is far cheaper to write than a list per row."""
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(rows)
    return buffer.getvalue()


#: Characters that make the csv module quote a field (with ``lineterminator="\\n"``).
_CSV_SPECIAL = (",", '"', "\r", "\n")


def _candidate_csv(candidates: Candidates, subs: Sequence[VerifiedSubmission]) -> str:
    """The candidate table's CSV text: platform_a, token_a, platform_b, token_b, similarity (rounded to 6 places).

    Byte for byte what :func:`_csv_text` writes: built column by column when no platform name or token needs
    quoting (pprl's tokens are hex), else (a submission with odd tokens) by the csv module.
    """
    names = [s.platform for s in subs]
    tokens = [s.tokens for s in subs]
    sims = list(map(round, candidates.similarity.tolist(), itertools.repeat(6)))
    everything = "".join(itertools.chain(names, *tokens))
    if any(c in everything for c in _CSV_SPECIAL):
        return _csv_text(
            [names[d0], tokens[d0][r0], names[d1], tokens[d1][r1], sim]
            for sim, (d0, d1), (r0, r1) in zip(sims, candidates.dataset.tolist(), candidates.record.tolist())
        )
    if not sims:
        return ""
    offsets = np.concatenate([[0], np.cumsum([len(t) for t in tokens])]).astype(np.int64)
    name_of = np.array(names, dtype=object)
    token_of = np.array([t for ts in tokens for t in ts], dtype=object)
    d, r = candidates.dataset, candidates.record
    columns = (
        name_of[d[:, 0]].tolist(),
        token_of[offsets[d[:, 0]] + r[:, 0]].tolist(),
        name_of[d[:, 1]].tolist(),
        token_of[offsets[d[:, 1]] + r[:, 1]].tolist(),
        map(repr, sims),
    )
    return "\n".join(map(",".join, zip(*columns))) + "\n"


def _member_similarities(
    members: np.ndarray, group_of: np.ndarray, candidates: Candidates, offsets: np.ndarray
) -> np.ndarray:
    """Each member's best similarity to a fellow member (as ``solve.group_similarities``), vectorised.

    ``members`` are the groups' records one after another (as indices into all datasets laid end to end at
    ``offsets``), ``group_of`` each record's group (-1: none); the result is in the order of ``members``.
    """
    best = np.full(int(offsets[-1]), np.nan)
    if len(candidates):
        a = offsets[candidates.dataset[:, 0]] + candidates.record[:, 0]
        b = offsets[candidates.dataset[:, 1]] + candidates.record[:, 1]
        same = (group_of[a] >= 0) & (group_of[a] == group_of[b]) & (a != b)
        sim = candidates.similarity[same]
        ends = np.concatenate([a[same], b[same]])
        values = np.concatenate([sim, sim])
        order = np.lexsort((-values, ends))  # per record, highest first
        ends, values = ends[order], values[order]
        first = np.r_[True, ends[1:] != ends[:-1]] if ends.shape[0] else np.zeros(0, bool)
        best[ends[first]] = values[first]
    return best[members]


def _entities(
    groups: Sequence[Sequence[tuple[int, int]]],
    candidates: Candidates,
    subs: Sequence[VerifiedSubmission],
    choice: ThresholdChoice,
) -> list[Entity]:
    """The groups as entities: members [platform, token, similarity], and the match probability.

    A member's similarity is its best to a fellow member; an entity's match probability is the lowest posterior
    among its members' links. Built column by column (a 20k x 20k linkage has 30,000 members).
    """
    if not groups:
        return []
    sizes = [len(s.tokens) for s in subs]
    offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    lengths = np.fromiter((len(g) for g in groups), dtype=np.int64, count=len(groups))
    chain = itertools.chain.from_iterable
    flat = np.fromiter(chain(chain(groups)), dtype=np.int64, count=2 * int(lengths.sum())).reshape(-1, 2)
    members = offsets[flat[:, 0]] + flat[:, 1]
    group_of = np.full(int(offsets[-1]), -1, dtype=np.int64)
    group_of[members] = np.repeat(np.arange(len(groups)), lengths)
    sims = _member_similarities(members, group_of, candidates, offsets)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    probabilities: list[float | None] = [None] * len(groups)
    post = choice.posterior(sims)
    if post is not None:
        probabilities = np.round(np.minimum.reduceat(post, starts), 6).tolist()
    platforms = np.array([s.platform for s in subs], dtype=object)[flat[:, 0]].tolist()
    tokens = np.array([t for s in subs for t in s.tokens], dtype=object)[members].tolist()
    rows = list(map(list, zip(platforms, tokens, map(round, sims.tolist(), itertools.repeat(6)))))
    return [
        Entity(entity_id=f"E{number:07d}", members=rows[start : start + length], match_probability=probability)
        for number, start, length, probability in zip(
            itertools.count(1), starts.tolist(), lengths.tolist(), probabilities
        )
    ]


def _pair_codes(dataset: np.ndarray, record: np.ndarray, sizes: Sequence[int]) -> np.ndarray:
    """One int64 per (dataset, record) pair, order-free, for membership tests."""
    offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    a = offsets[dataset[:, 0]] + record[:, 0]
    b = offsets[dataset[:, 1]] + record[:, 1]
    lo, hi = np.minimum(a, b), np.maximum(a, b)
    return lo * int(offsets[-1]) + hi


@dataclass(frozen=True)
class CandidateSearch:
    """Candidate pairs between datasets, with the sample, threshold choice and blocking behind them."""

    candidates: Candidates
    sample: BestMatchSample
    choice: ThresholdChoice
    threshold: float
    method: str
    reason: str
    plan: BlockingPlan
    report: BlockingReport | None


def search_candidates(datasets: Sequence[np.ndarray], options: LinkOptions, seed: bytes) -> CandidateSearch:
    """Sample best matches, choose the threshold (or take the fixed one), plan blocking, find the pairs.

    Keyed by ``seed`` (public), so the same inputs always give the same pairs;
    used by linking and by registry updates alike.
    """
    sample = best_match_sample(datasets, size=options.sample_size, seed=seed, workers=options.workers)
    choice = choose_threshold(sample.top1, sample.top2, records=sample.record_ids())
    if options.threshold is None:
        t, method, reason = choice.threshold, choice.method, choice.reason
    else:
        t, method, reason = float(options.threshold), "fixed", ""
    plan = plan_blocking(datasets, t, mode=options.blocking, seed=seed, sample=sample)  # type: ignore[arg-type]
    report: BlockingReport | None = None
    engine = options.engine
    if plan.method == "lsh" and plan.design is not None:
        bands, bits = plan.design.bands, plan.design.bits_per_band
        if engine is not None:
            estimated, at_threshold = lsh_estimates(datasets, t, sample, bands, bits)
            candidates, report = engine.lsh_candidates(
                datasets, t, seed=seed, bands=bands, bits_per_band=bits, estimated_pair_completeness=estimated,
                pair_completeness_at_threshold=at_threshold,
            )
        else:
            candidates, report = lsh_candidates(
                datasets, t, seed=seed, bands=bands, bits_per_band=bits, sample=sample, progress=options.progress,
            )
    elif engine is not None:
        candidates = engine.find_candidates(datasets, t)
    else:
        candidates = find_candidates(datasets, t, progress=options.progress, workers=options.workers)
    return CandidateSearch(candidates, sample, choice, t, method, reason, plan, report)


def link_submissions(
    me: PartyKey, cards: Sequence[Card], submissions: Sequence[Submission], options: LinkOptions
) -> Linked:
    """Verify submissions, compare encodings (Dice), solve greedily, sign the linkage.

    Threshold and blocking are keyed by a public seed derived from the
    submissions' hashes, so the same submissions always give the same
    linkage. The header records the threshold and how it was chosen, the
    blocking figures and the candidate-pair count; each entity carries an
    estimated ``match_probability``; the payload also keeps the candidate
    pairs and the sample's best matches (tokens and similarities only) so
    that an evaluation can measure the run.

    Raises:
        SignatureError: a submission not signed by a platform among ``cards``.
        DocumentError, KeyMismatchError: submissions that do not belong together.
        PolicyError: fewer than two platforms.
    """
    with _gc_paused():
        return _link(me, cards, submissions, options)


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """No cyclic garbage collection while linking: the tens of thousands of lists and objects it makes hold no
    cycles, and collections triggered by their number cost more than the step's solving."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _link(
    me: PartyKey, cards: Sequence[Card], submissions: Sequence[Submission], options: LinkOptions
) -> Linked:
    """:func:`link_submissions`' steps (its caller pauses garbage collection)."""
    subs = [open_submission(doc, cards) for doc in submissions]
    if options.run is not None:
        for s in subs:
            if s.doc.header.run != options.run:
                made = f"run '{s.doc.header.run}'" if s.doc.header.run else "no run"
                raise PolicyError(f"{s.source}: made for {made}, not run '{options.run}' (replayed from another "
                                  "linkage?); nothing is linked")
    check_consistent(subs)
    if len(subs) < 2:
        raise PolicyError("linkage needs submissions from at least two platforms")
    datasets = [s.clks for s in subs]
    sizes = [len(s.tokens) for s in subs]
    search = search_candidates(datasets, options, derive_seed(*sorted(s.hash for s in subs)))
    candidates, sample, choice, plan, report = (search.candidates, search.sample, search.choice, search.plan,
                                                search.report)
    t, method, reason = search.threshold, search.method, search.reason
    sample_pc = None
    if report is not None:
        wanted = sample.top1 >= t
        if wanted.any():
            pairs = np.stack([sample.dataset[wanted], sample.other[wanted]], axis=1)
            recs = np.stack([sample.record[wanted], sample.partner[wanted]], axis=1)
            have = _pair_codes(candidates.dataset, candidates.record, sizes)
            sample_pc = float(np.isin(_pair_codes(pairs, recs, sizes), have).mean())
    groups = greedy_solve(candidates)
    entities = _entities(groups, candidates, subs, choice)
    names = [s.platform for s in subs]
    tokens = [s.tokens for s in subs]
    pairs_total = int(sum(a * b for a, b in itertools.combinations(sizes, 2)))
    comparisons = report.comparisons if report is not None else pairs_total
    blocking_header: dict[str, Any] = {
        "method": "lsh" if report is not None else "none",
        "reason": plan.reason,
        "pairs_total": pairs_total,
        "comparisons": comparisons,
        "reduction_ratio": round(1.0 - comparisons / pairs_total, 8) if pairs_total else 0.0,
    }
    if report is not None:
        blocking_header.update(
            bands=report.bands,
            bits_per_band=report.bits_per_band,
            seed=report.seed,
            estimated_pair_completeness=report.estimated_pair_completeness,
            pair_completeness_at_threshold=report.pair_completeness_at_threshold,
            sample_pair_completeness=sample_pc,
        )
    candidate_rows = _candidate_csv(candidates, subs)
    sample_rows = _csv_text(
        [names[d], tokens[d][r], names[e], tokens[e][p], round(s1, 6), "" if math.isnan(s2) else round(s2, 6)]
        for d, r, e, p, s1, s2 in zip(
            sample.dataset.tolist(), sample.record.tolist(), sample.other.tolist(),
            sample.partner.tolist(), sample.top1.tolist(), sample.top2.tolist(),
        )
    )
    first = subs[0].doc.header
    header = LinkageHeader(
        threshold=t,
        threshold_method=method,
        threshold_choice={**choice.as_dict(), "sample_records": sample.records_sampled,
                          **({"used": False} if options.threshold is not None else {})},
        method="dice+greedy",
        schema_hash=first.schema_hash,
        linkage_key_id=first.linkage_key_id,
        paillier_fingerprint=next(
            (s.doc.header.paillier_fingerprint for s in subs if s.doc.header.paillier_fingerprint), None
        ),
        submissions=[LinkedSubmission(platform=s.platform, records=len(s.tokens), hash=s.hash) for s in subs],
        blocking=blocking_header,
        candidate_pairs=len(candidates),
        entities=len(entities),
        run=options.run,
    )
    payload = LinkagePayload(
        entities=entities,
        candidates=Table(columns=list(CANDIDATE_COLUMNS), csv=candidate_rows),
        sample=Table(columns=list(SAMPLE_COLUMNS), csv=sample_rows),
    )
    linkage = seal(Linkage(header=header, payload=payload), me.identity, me.card)
    figures = LinkReport(
        entities=len(entities),
        candidate_pairs=len(candidates),
        linked_records=sum(len(e.members) for e in entities),
        threshold=t,
        threshold_method=method,
        threshold_reason=reason,
        blocking=blocking_header["method"],
        blocking_reason=plan.reason,
        bands=report.bands if report is not None else 0,
        bits_per_band=report.bits_per_band if report is not None else 0,
        comparisons=comparisons,
        pairs_total=pairs_total,
        reduction_ratio=blocking_header["reduction_ratio"],
        estimated_pair_completeness=report.estimated_pair_completeness if report is not None else None,
        sample_pair_completeness=sample_pc,
    )
    return Linked(linkage=linkage, report=figures)
