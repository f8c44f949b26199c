"""The whole consortium on one machine: what ``pprl demo`` and the examples run.

Every step goes through the same party-level functions the CLI calls, in its
own sub-directory of the work directory, as the parties would run them on
their own machines. Afterwards the summary checks the outcome against the
synthetic ground truth: linkage quality, and that every decrypted aggregate
equals the plaintext sum over the records the bureau linked.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

import pandas as pd

from pprl.documents import Card
from pprl.errors import DocumentError
from pprl.matching.quality import LinkageQuality, evaluate_groups
from pprl.protocol.files import (
    aggregate,
    combine_secrets,
    decrypt_release,
    init_party,
    link,
    load_key,
    load_linkage,
    paillier_keygen,
    release_evidence,
    share_secret,
    submit,
    verify_log,
)
from pprl.protocol.identity import PartyKey

__all__ = [
    "ConsortiumSummary",
    "StepTimer",
    "make_identities",
    "prepare_workdir",
    "run_consortium",
    "SCHEMA_PATH",
    "SCORE_COLUMNS",
]

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "examples" / "schema-cn.json"
#: Every score column ``pprl synth`` draws; the demos submit (and check) them all, packed in one ciphertext.
SCORE_COLUMNS = ("repay_score", "spend_score", "travel_score")
_MARKER = ".pprl-demo"


@dataclass
class ConsortiumSummary:
    """What a consortium run produced and how good it was."""

    people: int
    platforms: int
    records: int
    quality: LinkageQuality | None
    entities: int
    released: int
    sums_checked: int
    sums_match: bool
    timings: dict[str, float] = field(default_factory=dict)
    records_per_ciphertext: int = 1
    score_bytes: int = 0
    workdir: Path = Path(".")

    def render(self) -> str:
        lines = [
            f"pprl demo: {self.people} people over {self.platforms} platforms ({self.records} records) in {self.workdir}",
        ]
        if self.quality is not None:
            q = self.quality
            lines.append(
                f"  linkage   precision {q.precision:.4f}  recall {q.recall:.4f}  F1 {q.f1:.4f}"
                f"  ({q.correct_pairs}/{q.predicted_pairs} predicted pairs correct, {q.true_pairs} true pairs)"
            )
        lines.append(f"  entities  {self.entities} linked, {self.released} released")
        if self.score_bytes:
            per_value = self.score_bytes / (self.records * len(SCORE_COLUMNS))
            packing = "1 record" if self.records_per_ciphertext == 1 else f"{self.records_per_ciphertext} records"
            lines.append(
                f"  scores    {len(SCORE_COLUMNS)} columns, {packing} per ciphertext: "
                f"{per_value:.1f} bytes per encrypted value in the submissions"
            )
        verdict = "all equal" if self.sums_match else "MISMATCH"
        lines.append(f"  check     {self.sums_checked} decrypted aggregates vs plaintext sums: {verdict}")
        lines.append("  timings   " + ", ".join(f"{k} {v:.1f}s" for k, v in self.timings.items()))
        return "\n".join(lines)


def prepare_workdir(workdir: Path) -> None:
    """Empty a demo directory: refuse one pprl did not make, replace one it did."""
    if workdir.exists() and any(workdir.iterdir()):
        if not (workdir / _MARKER).exists():
            raise DocumentError(f"{workdir}: exists and is not a previous pprl demo; choose an empty --workdir")
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / _MARKER).write_text("created by pprl demo; removed and rebuilt by the next run\n")


class StepTimer:
    """``with step("link"):`` announces a step and adds its wall time to ``timings``."""

    def __init__(self, timings: dict[str, float], echo: Callable[[str], None]) -> None:
        self.timings, self.echo = timings, echo

    @contextmanager
    def __call__(self, label: str) -> Iterator[None]:
        self.echo(f"[{label}]")
        start = time.perf_counter()
        try:
            yield
        finally:
            self.timings[label] = self.timings.get(label, 0.0) + time.perf_counter() - start


def make_identities(keys_dir: Path, platforms: list[str]) -> tuple[dict[str, PartyKey], dict[str, Card]]:
    """Identities for the platforms, a bureau and an authority, as each would make its own."""
    for name in platforms:
        init_party(name, "platform", keys_dir)
    init_party("bureau", "bureau", keys_dir)
    init_party("authority", "authority", keys_dir)
    keys = {n: load_key(keys_dir / f"{n}.key") for n in [*platforms, "bureau", "authority"]}
    return keys, {n: key.card for n, key in keys.items()}


def run_consortium(
    workdir: str | os.PathLike[str],
    *,
    people: int = 1000,
    platforms: int = 3,
    bits: int = 2048,
    threshold: float | str = "auto",
    min_contributors: int = 2,
    seed: int = 0,
    echo: Callable[[str], None] = lambda message: None,
    progress: bool = False,
    records_per_ciphertext: int = 1,
) -> ConsortiumSummary:
    """Run every party's step in ``workdir`` and check the result against the truth.

    ``records_per_ciphertext``: how many records each platform packs into
    one ciphertext (see :func:`pprl.protocol.submit.submit`).
    """
    from pprl.sim.synth import generate_population, write_population

    root = Path(workdir)
    prepare_workdir(root)
    timings: dict[str, float] = {}
    names = [f"platform_{k}" for k in range(1, platforms + 1)]

    step = StepTimer(timings, echo)

    with step("synth"):
        population = generate_population(people, platforms, seed=seed, progress=progress)
        write_population(population, root / "data")
    with step("identities"):
        keys, cards = make_identities(root / "keys", names)
    with step("secret"):
        shares = []
        for name in names:
            peers = [cards[p] for p in names if p != name]
            shares.append(share_secret(keys[name], peers, root / name / f"{name}.share.json"))
        for name in names:
            combine_secrets(keys[name], shares, root / name / f"{name}.secret")
    with step("paillier keygen"):
        keygen = paillier_keygen(keys["authority"], bits, root / "authority")
    with step("submit"):
        submissions = []
        for name in names:
            result = submit(
                keys[name],
                SCHEMA_PATH,
                root / name / f"{name}.secret",
                root / "data" / f"{name}.csv",
                "user_id",
                root / name / f"{name}.submission.json",
                paillier=keygen.public_path,
                scores=SCORE_COLUMNS,
                authority=cards["authority"],
                progress=progress,
                records_per_ciphertext=records_per_ciphertext,
            )
            submissions.append(result)
            echo(f"  {name}: {result.records} records")
    bureau_dir = root / "bureau"
    with step("link"):
        linked = link(
            keys["bureau"], [cards[n] for n in names], [s.path for s in submissions], threshold,
            bureau_dir / "linkage.json", progress=progress,
        )
    with step("aggregate"):
        released = aggregate(
            keys["bureau"], linked.path, [s.path for s in submissions], min_contributors,
            bureau_dir / "release.json", cards=[cards[n] for n in names], progress=progress,
        )
    with step("decrypt"):
        decrypted = decrypt_release(
            keys["authority"], keygen.private_path, released.path, root / "authority" / "audit.log",
            root / "authority" / "aggregates.csv", cards=[cards["bureau"]], progress=progress,
            # the authority recomputes the release from the linkage and submissions, under its own floor
            evidence=release_evidence(linked.path, [s.path for s in submissions], [cards[n] for n in names],
                                      min_contributors),
        )
        verify_log(root / "authority" / "audit.log", [cards["authority"]])

    with step("check"):
        quality, checked, match = _check(root, names, linked.path, decrypted.path, min_contributors, cards["bureau"])
    return ConsortiumSummary(
        people=people,
        platforms=platforms,
        records=sum(s.records for s in submissions),
        quality=quality,
        entities=linked.entities,
        released=decrypted.entities,
        sums_checked=checked,
        sums_match=match,
        timings=timings,
        workdir=root,
        records_per_ciphertext=records_per_ciphertext,
        score_bytes=sum(s.score_bytes for s in submissions),
    )


def _check(
    root: Path, names: list[str], linkage_path: Path, aggregates_path: Path, min_contributors: int, bureau: Card
) -> tuple[LinkageQuality, int, bool]:
    """Compare the run with the truth: quality of the links, and every decrypted sum."""
    token_to_user = {}
    scores = {}
    for name in names:
        mapping = pd.read_csv(root / name / f"{name}.submission.json.map.csv", dtype=str, keep_default_na=False)
        token_to_user.update({t: (name, u) for t, u in zip(mapping["token"], mapping["user_id"])})
        data = pd.read_csv(root / "data" / f"{name}.csv", dtype=str, keep_default_na=False)
        for row in data.itertuples(index=False):
            scores[(name, row.user_id)] = {c: Decimal(getattr(row, c)) for c in SCORE_COLUMNS}
    truth_frame = pd.read_csv(root / "data" / "truth.csv", dtype=str, keep_default_na=False)
    truth = {(p, u): person for p, u, person in truth_frame.itertuples(index=False)}
    entities = [e.to_dict() for e in load_linkage(linkage_path, [bureau]).payload.entities]
    groups = [[token_to_user[token] for _, token, _ in e["members"]] for e in entities]
    quality = evaluate_groups(groups, truth)

    expected = {}
    for entity, members in zip(entities, groups):
        if len(members) >= min_contributors:
            expected[entity["entity_id"]] = {c: sum(scores[m][c] for m in members) for c in SCORE_COLUMNS}
    released = pd.read_csv(aggregates_path, dtype=str, keep_default_na=False)
    match = len(released) == len(expected)
    for row in released.itertuples(index=False):
        want = expected.get(row.entity_id)
        if want is None or any(Decimal(getattr(row, f"{c}_sum")) != want[c] for c in SCORE_COLUMNS):
            match = False
    return quality, len(released), match
