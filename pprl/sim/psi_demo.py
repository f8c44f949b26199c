"""The exact-identifier path end to end on one machine: what ``pprl demo --exact`` runs.

Every party's step goes through the same functions the ``pprl psi`` commands
call; afterwards the summary checks the intersection against the synthetic
truth and every decrypted sum against the plaintext.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import pandas as pd

from pprl.crypto import psi as psi_crypto
from pprl.encoding.normalise import normaliser_for
from pprl.errors import (
    PolicyError,
)
from pprl.protocol.files import (
    aggregate_intersection,
    blind_identifiers,
    init_session,
    load_session,
    load_state,
    psi_evidence,
    reblind_round,
)
from pprl.protocol.psi import Session, State, entity_id, entity_key, reblind_schedule
from pprl.sim.consortium import (
    SCORE_COLUMNS,
    StepTimer,
    make_identities,
    prepare_workdir,
)

__all__ = ["ExactDemoSummary", "run_exact_demo"]


@dataclass
class ExactDemoSummary:
    """What ``run_exact_demo`` did and whether it matched the truth."""

    people: int
    platforms: int
    records: int
    identifier: str
    intersection: int
    intersection_truth: int
    released: int
    released_truth: int
    sums_checked: int
    sums_match: bool
    timings: dict[str, float] = field(default_factory=dict)
    workdir: Path = Path(".")

    @property
    def ok(self) -> bool:
        return (
            self.intersection == self.intersection_truth and self.released == self.released_truth and self.sums_match
        )

    def render(self) -> str:
        verdict = "all equal" if self.sums_match else "MISMATCH"
        size = "exact" if self.intersection == self.intersection_truth else "MISMATCH"
        head = (
            f"pprl demo --exact: {self.people} people over {self.platforms} platforms ({self.records} records, "
            f"matching on {self.identifier}) in {self.workdir}"
        )
        psi_line = (
            f"  psi       {self.intersection} persons on 2+ platforms (truth {self.intersection_truth}: {size}), "
            f"{self.released} released (truth {self.released_truth})"
        )
        return "\n".join([
            head,
            psi_line,
            f"  check     {self.sums_checked} decrypted aggregates vs plaintext sums: {verdict}",
            "  timings   " + ", ".join(f"{k} {v:.1f}s" for k, v in self.timings.items()),
        ])


def run_exact_demo(
    workdir: str | os.PathLike[str],
    people: int = 1000,
    platforms: int = 3,
    *,
    identifier: str = "resident_id",
    min_contributors: int = 2,
    seed: int = 0,
    bits: int = 2048,
    score_columns: Sequence[str] = SCORE_COLUMNS,
    reveal_intersection: bool = False,
    workers: int | None = None,
    echo: Callable[[str], None] = lambda message: None,
    progress: bool = False,
) -> ExactDemoSummary:
    """Run the exact (PSI) path end to end on a clean synthetic population and check it.

    Every party's step goes through the same functions the CLI calls, in its
    own sub-directory of ``workdir``. Afterwards the summary compares the
    intersection size with the truth and every decrypted sum with the
    plaintext sum; to know which entity is which person, the check (and only
    the check) recomputes entity ids with all platforms' session keys.
    """
    from pprl.protocol.files import decrypt_release, paillier_keygen, verify_log
    from pprl.sim.synth import generate_population, write_population

    if platforms < 2:
        raise PolicyError("the exact path needs at least two platforms")
    root = Path(workdir)
    prepare_workdir(root)
    timings: dict[str, float] = {}
    names = [f"platform_{k}" for k in range(1, platforms + 1)]

    timed = StepTimer(timings, echo)

    with timed("synth"):
        population = generate_population(people, platforms, seed=seed, corruption=0.0, progress=progress)
        write_population(population, root / "data")
    with timed("identities"):
        keys, cards = make_identities(root / "keys", names)
    with timed("paillier keygen"):
        keygen = paillier_keygen(keys["authority"], bits, root / "authority")
    bureau_dir = root / "bureau"
    with timed("session"):
        init_session(
            keys["bureau"], [cards[n] for n in names], bureau_dir / "session.json",
            identifier=identifier, reveal_intersection=reveal_intersection,
        )
    echo("[blind + encrypt]")
    current: dict[str, Path] = {}
    for name in names:
        result = blind_identifiers(
            keys[name], bureau_dir / "session.json", root / "data" / f"{name}.csv", "user_id",
            root / name / "round.0.json", root / name / "psi.state",
            paillier=keygen.public_path, scores=score_columns, authority=cards["authority"],
            bureau=cards["bureau"], platforms=[cards[n] for n in names if n != name], workers=workers,
            progress=progress,
        )
        current[name] = result.path
        for label, seconds in result.timings.items():
            timings[label] = timings.get(label, 0.0) + seconds
        echo(f"  {name}: {result.records} identifiers blinded, {result.skipped} invalid left out")
    sess = load_session(bureau_dir / "session.json", cards["bureau"], [cards[n] for n in names])
    with timed("reblind"):
        for step, pairs in enumerate(reblind_schedule(sess), start=1):
            for platform, origin in pairs:
                hop = reblind_round(
                    keys[platform], root / platform / "psi.state", current[origin],
                    root / platform / f"round.{step}.{origin}.json", workers=workers, progress=progress,
                )
                current[origin] = hop.path
    with timed("aggregate"):
        agg = aggregate_intersection(
            keys["bureau"], sess, [current[n] for n in names], min_contributors, bureau_dir / "release.json",
        )
    with timed("decrypt"):
        decrypted = decrypt_release(
            keys["authority"], keygen.private_path, agg.path, root / "authority" / "audit.log",
            root / "authority" / "aggregates.csv", cards=[cards["bureau"]], progress=progress,
            evidence=psi_evidence(bureau_dir / "session.json", [current[n] for n in names], [cards[n] for n in names],
                                  min_contributors),
        )
        verify_log(root / "authority" / "audit.log", [cards["authority"]])
    with timed("check"):
        truth = population.truth
        records = len(truth)
        holders = truth.groupby("person")["platform"].nunique()
        shared_people = holders[holders >= 2]
        released_people = holders[holders >= min_contributors]
        states = [load_state(root / n / "psi.state", keys[n]) for n in names]
        expected = _expected_sums(
            population, released_people.index.tolist(), sess, states, identifier, score_columns,
            entity_key(keys["bureau"], sess.session_id),
        )
        got = pd.read_csv(decrypted.path, dtype=str, keep_default_na=False)
        match = len(got) == len(expected)
        for row in got.to_dict("records"):
            want = expected.get(row["entity_id"])
            if want is None or int(row["contributors"]) != want[0]:
                match = False
                continue
            if any(Decimal(row[f"{c}_sum"]) != want[1][c] for c in score_columns):
                match = False
    return ExactDemoSummary(
        people=people,
        platforms=platforms,
        records=records,
        identifier=identifier,
        intersection=agg.intersection,
        intersection_truth=len(shared_people),
        released=decrypted.entities,
        released_truth=len(released_people),
        sums_checked=len(got),
        sums_match=match,
        timings=timings,
        workdir=root,
    )


def _expected_sums(
    population: Any,
    persons: list[str],
    session: Session,
    states: list[State],
    identifier: str,
    score_columns: Sequence[str],
    key: bytes,
) -> dict[str, tuple[int, dict[str, Decimal]]]:
    """Entity id -> (contributors, plaintext sums), computed with every platform's key (demo check only)."""
    wanted = set(persons)
    truth = population.truth
    normalise = normaliser_for(identifier)
    per_person: dict[str, list[dict[str, str]]] = {}
    for platform, frame in population.platforms.items():
        t = truth[truth["platform"] == platform].set_index("user_id")["person"]
        for row in frame.to_dict("records"):
            person = t[row["user_id"]]
            if person in wanted:
                per_person.setdefault(person, []).append(row)
    people = sorted(per_person)
    ids = [normalise(per_person[p][0][identifier]) or "" for p in people]
    blob = psi_crypto.blind(states[0].key, ids, session.domain)
    for st in states[1:]:
        blob = psi_crypto.reblind(st.key, blob)
    out = {}
    for person, element in zip(people, psi_crypto.split_elements(blob)):
        rows = per_person[person]
        sums = {c: sum((Decimal(r[c]) for r in rows), Decimal(0)) for c in score_columns}
        out[entity_id(key, element)] = (len(rows), sums)
    return out
