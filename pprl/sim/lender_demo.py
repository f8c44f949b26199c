"""The lender story on one machine: what ``pprl demo --lender`` runs.

Two months of platform submissions go into one registry (people added,
changed and removed in between); a lender finds its consenting applicants by
pseudonym (people on several platforms, on one, and on none), asks the
bureau, and reads the answer only it can unmask; queries with an expired
consent, over the quota and from an unregistered lender are refused. Every
step goes through the same functions the CLI calls, each party in its own
sub-directory. The summary checks every answer against the plaintext sums
over the records the bureau linked.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pandas as pd

from pprl.documents import Card, Query, load, save
from pprl.encoding.normalise import normaliser_for
from pprl.errors import PPRLError
from pprl.protocol.files import (
    KeygenResult,
    audit_report,
    combine_secrets,
    decrypt_answer_file,
    evaluate_pseudonyms_file,
    finish_pseudonyms_file,
    init_party,
    load_key,
    open_answer_file,
    paillier_keygen,
    query_file,
    request_pseudonyms_file,
    share_secret,
    submit,
)
from pprl.protocol.identity import PartyKey
from pprl.protocol.link import LinkOptions
from pprl.protocol.query import AnswerPolicy
from pprl.registry import Registry, UpdateReport
from pprl.sim.consortium import SCHEMA_PATH, SCORE_COLUMNS, StepTimer, prepare_workdir

__all__ = ["LenderDemoSummary", "run_lender_demo"]


@dataclass
class LenderDemoSummary:
    """What the lender story produced, and whether every answer equals the plaintext."""

    people: int
    platforms: int
    months: list[list[UpdateReport]]
    entities: int
    applicants: int
    found: int
    expected_found: int
    refused: dict[str, str]
    sums_checked: int
    sums_match: bool
    timings: dict[str, float] = field(default_factory=dict)
    workdir: Path = Path(".")
    report: Path = Path(".")
    log_entries: int = 0
    chains_ok: bool = False

    @property
    def ok(self) -> bool:
        return self.sums_match and self.found == self.expected_found and len(self.refused) == 3 and self.chains_ok

    def heading(self) -> str:
        """The summary's first line."""
        return f"pprl demo --lender: {self.people} people over {self.platforms} platforms in {self.workdir}"

    def extra_lines(self) -> list[str]:
        """Lines a variant of the story adds before the timings (none here)."""
        return []

    def render(self) -> str:
        lines = [self.heading()]
        for month, reports in enumerate(self.months, start=1):
            new = sum(r.new for r in reports)
            updated = sum(r.updated for r in reports)
            removed = sum(r.removed for r in reports)
            lines.append(f"  month {month}   registry: {new} new, {updated} updated, {removed} removed entities")
        lines.append(f"  registry  {self.entities} entities")
        lines.append(f"  lender    {self.applicants} consenting applicants asked, {self.found} found "
                     f"(expected {self.expected_found}: the rest are on no platform)")
        for case, reason in self.refused.items():
            lines.append(f"  refused   {case}: {reason}")
        chains = "chains and signatures OK" if self.chains_ok else "A LOG DOES NOT VERIFY"
        lines.append(f"  regulator {self.report}: {self.log_entries} bureau log entries, {chains}")
        verdict = "all equal" if self.sums_match else "MISMATCH"
        lines.append(f"  check     {self.sums_checked} answers vs plaintext sums over the linked records: {verdict}")
        lines.extend(self.extra_lines())
        lines.append("  timings   " + ", ".join(f"{k} {v:.1f}s" for k, v in self.timings.items()))
        return "\n".join(lines)


def _stamp(days: float) -> str:
    return (datetime.now(timezone.utc) + timedelta(days=days)).isoformat(timespec="seconds")


def _write_csv(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    path.write_text(buffer.getvalue(), encoding="utf-8")
    return path


def _rows(path: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(path.read_text(encoding="utf-8").splitlines()))


def run_lender_demo(
    workdir: str | os.PathLike[str],
    *,
    people: int = 2000,
    platforms: int = 3,
    bits: int = 2048,
    seed: int = 0,
    applicants: int = 30,
    echo: Callable[[str], None] = lambda message: None,
    progress: bool = False,
) -> LenderDemoSummary:
    """Run the lender story in ``workdir`` and check every answer against the plaintext."""
    root = Path(workdir)
    prepare_workdir(root)
    timings: dict[str, float] = {}
    step = StepTimer(timings, echo)
    names = platform_names(platforms)

    with step("synth"):
        population, month2 = synth_months(root, names, people, platforms, seed, progress)
    with step("identities"):
        keys, cards, keygen = make_parties(root, names, bits)

    registry = root / "bureau" / "registry.db"
    months: list[list[UpdateReport]] = []
    maps: dict[str, dict[str, str]] = {}
    for month in MONTHS:
        with step(f"{month} submit"):
            subs = [submit_month(root, month, n, keys, cards, keygen, maps, progress) for n in names]
        with step(f"{month} registry"):
            from pprl.documents import Submission

            with Registry(registry) as reg:
                months.append(reg.update([load(p, Submission) for p in subs], LinkOptions(progress=progress),
                                         [cards[n] for n in names], me=keys["bureau"]))

    with step("applicants"):
        data, applicants_path, people_rows = choose_applicants(root, names, population, month2, applicants)
    with step("pseudonyms"):
        request = request_pseudonyms_file(keys["bank_a"], applicants_path, "app_id", "resident_id",
                                          root / "bank_a" / "pseudonym-request.json", root / "bank_a" / "pseudonym.state")
        evaluate_pseudonyms_file(keys[names[0]], root / names[0] / "linkage.secret", request.path, [cards["bank_a"]],
                                 root / names[0] / "oprf.log", root / "bank_a" / "pseudonym-response.json")
        pseudonyms, _count = finish_pseudonyms_file(keys["bank_a"], request.state_path,
                                                    root / "bank_a" / "pseudonym-response.json", [cards[names[0]]],
                                                    root / "bank_a" / "pseudonyms.csv")
    with step("query and answer"):
        query = query_file(keys["bank_a"], pseudonyms, write_consents(root, pseudonyms), "loan-application",
                           root / "bank_a" / "query.json")
        with Registry(registry) as reg:
            answer = reg.answer(keys["bureau"], load(query, Query), [cards["bank_a"]], AnswerPolicy())
        answer_path = save(root / "bureau" / "answer.json", answer)
        decrypt_answer_file(keys["authority"], keygen.private_path, answer_path, [cards["bureau"], cards["bank_a"]],
                            root / "authority" / "audit.log", root / "authority" / "answer-decryption.json")
        scores_path, asked, found = open_answer_file(
            keys["bank_a"], answer_path, root / "authority" / "answer-decryption.json", pseudonyms,
            [cards["bureau"], cards["authority"]], root / "lender_scores.csv",
        )
    with step("refusals"):
        refused = _refusals(root, keys, cards, registry, pseudonyms)
    with step("regulator"):
        log_entries, report, chains_ok = regulator_report(root, registry, cards)
    with step("check"):
        sums_checked, sums_match = check_answers(registry, maps, data, pseudonyms, scores_path)
        expected_found = sum(1 for _ref, person in people_rows if person)
    with Registry(registry) as reg:
        entities = reg.stats().entities
    return LenderDemoSummary(
        people=people, platforms=platforms, months=months, entities=entities, applicants=asked, found=found,
        expected_found=expected_found, refused=refused, sums_checked=sums_checked, sums_match=sums_match,
        timings=timings, workdir=root, report=report, log_entries=log_entries, chains_ok=chains_ok,
    )


# -- the steps the file-based story and the served one (pprl.sim.served_demo) share ----------------------

#: The two months of submissions.
MONTHS = ("month1", "month2")


def platform_names(platforms: int) -> list[str]:
    return [f"platform_{k}" for k in range(1, platforms + 1)]


def synth_months(root: Path, names: list[str], people: int, platforms: int, seed: int,
                 progress: bool) -> tuple[Any, dict[str, pd.DataFrame]]:
    """The population and each platform's two months (ROOT/<platform>/<month>.csv): in month 2 the first
    platform changes a twentieth of its records, drops a tenth and adds newcomers. Returns the population
    and month 2's frames."""
    from pprl.sim.synth import generate_population

    population = generate_population(people, platforms, seed=seed, progress=progress)
    newcomers = generate_population(max(10, people // 20), 1, seed=seed + 1).platforms["platform_1"].copy()
    newcomers["user_id"] = "new-" + newcomers["user_id"]
    month1 = {n: population.platforms[n] for n in names}
    first = month1[names[0]]
    changed = first.iloc[: len(first) // 20].copy()
    changed["repay_score"] = "1"
    month2 = dict(month1)
    month2[names[0]] = pd.concat([changed, first.iloc[len(first) // 10 :], newcomers], ignore_index=True)
    for month, frames in (("month1", month1), ("month2", month2)):
        for n in names:
            path = root / n / f"{month}.csv"
            path.parent.mkdir(parents=True, exist_ok=True)
            frames[n].to_csv(path, index=False)
    return population, month2


def make_parties(root: Path, names: list[str], bits: int) -> tuple[dict[str, PartyKey], dict[str, Card],
                                                                   KeygenResult]:
    """Every party's identity (ROOT/keys), the platforms' linkage secret, the authority's Paillier key."""
    keys = {}
    for name, role in [*[(n, "platform") for n in names], ("bureau", "bureau"), ("authority", "authority"),
                       ("bank_a", "lender"), ("bank_b", "lender")]:
        key_path, _ = init_party(name, role, root / "keys")
        keys[name] = load_key(key_path)
    cards = {n: k.card for n, k in keys.items()}
    shares = [share_secret(keys[n], [cards[p] for p in names if p != n], root / n / "share.json") for n in names]
    for n in names:
        combine_secrets(keys[n], shares, root / n / "linkage.secret")
    return keys, cards, paillier_keygen(keys["authority"], bits, root / "authority")


def submit_month(root: Path, month: str, name: str, keys: dict[str, PartyKey], cards: dict[str, Card],
                 keygen: KeygenResult, maps: dict[str, dict[str, str]], progress: bool) -> Path:
    """Platform ``name``'s signed submission of ``month`` (its token map goes into ``maps``)."""
    result = submit(
        keys[name], SCHEMA_PATH, root / name / "linkage.secret", root / name / f"{month}.csv", "user_id",
        root / name / f"{month}.sub.json", paillier=keygen.public_path, scores=SCORE_COLUMNS,
        authority=cards["authority"], pseudonym_column="resident_id", progress=progress,
    )
    maps[name] = {r["token"]: r["user_id"] for r in _rows(result.map_path)}
    return Path(result.path)


def choose_applicants(root: Path, names: list[str], population: Any, month2: dict[str, pd.DataFrame],
                      applicants: int) -> tuple[dict[str, dict[str, dict[str, str]]], Path, list[list[str]]]:
    """The lender's consenting applicants: people on several platforms, on one, and on none.

    Writes ROOT/bank_a/applicants.csv (app_id,resident_id) and the demo's own ROOT/lender_applicants.csv
    (app_id,person); returns month 2's rows per platform and user id, the applicants file, and the
    (app_id, person) rows ('' for a person on no platform).
    """
    normalise = normaliser_for("resident_id")
    data = {n: {r["user_id"]: r for r in month2[n].to_dict("records")} for n in names}
    truth = population.truth
    holders = truth[truth.apply(lambda r: r["user_id"] in data[r["platform"]], axis=1)]
    by_person = holders.groupby("person")
    several = [p for p, g in by_person if len(g) >= 2]
    single = [p for p, g in by_person if len(g) == 1]
    chosen = several[: applicants // 2] + single[: applicants // 3]
    rows, people_rows = [], []
    for i, person in enumerate(chosen):
        group = by_person.get_group(person)
        ids = [normalise(data[pl][u]["resident_id"]) for pl, u in zip(group["platform"], group["user_id"])]
        valid = [x for x in ids if x is not None]
        if not valid:
            continue
        rows.append([f"app-{i:04d}", str(valid[0])])
        people_rows.append([f"app-{i:04d}", person])
    for j in range(applicants - len(rows)):  # valid IDs nobody holds
        body = f"44010119800101{j:03d}"
        rows.append([f"new-{j:04d}", body + _check_char(body)])
        people_rows.append([f"new-{j:04d}", ""])
    _write_csv(root / "lender_applicants.csv", ["app_id", "person"], people_rows)
    applicants_path = _write_csv(root / "bank_a" / "applicants.csv", ["app_id", "resident_id"], rows)
    return data, applicants_path, people_rows


def write_consents(root: Path, pseudonyms: Path) -> Path:
    """bank_a's consent file for every applicant of ``pseudonyms``: a loan application, valid for 30 days."""
    consent_rows = [
        [r["reference"], hashlib.sha256(f"authorisation of {r['reference']} to bank_a".encode()).hexdigest(),
         "loan-application", _stamp(-1), _stamp(30)]
        for r in _rows(pseudonyms)
    ]
    return _write_csv(root / "bank_a" / "consents.csv", ["reference", "consent", "purpose", "issued", "expires"],
                      consent_rows)


#: The queries that must be refused: case -> the lender that signs it and how long its consents are valid.
REFUSAL_CASES = {
    "expired consent": ("bank_a", "expired", -1.0),
    "over quota": ("bank_a", "quota", 30.0),
    "unregistered lender": ("bank_b", "unknown", 30.0),
}


def refusal_queries(root: Path, keys: dict[str, PartyKey], pseudonyms: Path) -> dict[str, tuple[str, Path]]:
    """The signed query of every refusal case (two applicants each): case -> (lender, query file)."""
    rows = _rows(pseudonyms)[:2]
    few = _write_csv(root / "bank_a" / "few.csv", ["reference", "pseudonym"], [[r["reference"], r["pseudonym"]] for r in rows])

    def consents(tag: str, expires: float) -> Path:
        return _write_csv(root / "bank_a" / f"{tag}.consents.csv", ["reference", "consent", "purpose", "issued", "expires"], [
            [r["reference"], hashlib.sha256(f"{tag} {r['reference']}".encode()).hexdigest(), "loan-application",
             _stamp(-2), _stamp(expires)] for r in rows
        ])

    out = {}
    for case, (lender, tag, expires) in REFUSAL_CASES.items():
        out[case] = (lender, query_file(keys[lender], few, consents(tag, expires), "loan-application",
                                        root / lender / f"{case}.query.json"))
    return out


def regulator_report(root: Path, registry: Path, cards: dict[str, Card]) -> tuple[int, Path, bool]:
    """The regulator's page from the authority's audit log and the bureau's log (exported from the registry):
    (bureau log entries, report, every chain and signature verifies)."""
    with Registry(registry) as reg:
        entries = reg.log()
    bureau_log = root / "bureau" / "bureau.log"
    bureau_log.write_text("".join(json.dumps(e, sort_keys=True, ensure_ascii=False) + "\n" for e in entries),
                          encoding="utf-8")
    report, chains_ok = audit_report([root / "authority" / "audit.log", bureau_log],
                                     [cards["authority"], cards["bureau"]], root / "report.html")
    return len(entries), report, chains_ok


def _check_char(first17: str) -> str:
    from pprl.encoding.normalise import resident_id_check_char

    return str(resident_id_check_char(first17))


def _refusals(root: Path, keys: dict, cards: dict, registry: Path, pseudonyms: Path) -> dict[str, str]:
    """Three queries the bureau must refuse; returns case -> the one-line reason it gave."""
    out: dict[str, str] = {}
    rules = {
        "expired consent": ([cards["bank_a"]], AnswerPolicy()),
        "over quota": ([cards["bank_a"]], AnswerPolicy(daily_quota=1)),
        "unregistered lender": ([cards["bank_a"]], AnswerPolicy()),
    }
    for case, (_lender, query) in refusal_queries(root, keys, pseudonyms).items():
        lenders, policy = rules[case]
        try:
            with Registry(registry) as reg:
                reg.answer(keys["bureau"], load(query, Query), lenders, policy)
        except PPRLError as exc:
            out[case] = str(exc).split(": ", 1)[-1]
    return out


def check_answers(
    registry: Path, maps: dict[str, dict[str, str]], data: dict[str, dict[str, dict[str, str]]], pseudonyms: Path,
    scores: Path,
) -> tuple[int, bool]:
    """Every answer against the plaintext sums over the entity's linked records; returns (checked, all equal)."""
    wanted = {r["reference"]: bytes.fromhex(r["pseudonym"]) for r in _rows(pseudonyms)}
    got = {r["app_id"]: r for r in _rows(scores)}
    with Registry(registry) as reg:
        entity_of = reg.find(list(wanted.values()))
        members = reg.members()
    checked, match = 0, True
    for ref, p in wanted.items():
        line = got.get(ref)
        if p not in entity_of:
            match = match and line is not None and line["found"] == "no"
            continue
        records = [data[platform][maps[platform][token]] for platform, token in members[entity_of[p]]]
        sums = {c: sum((Decimal(r[c]) for r in records), Decimal(0)) for c in SCORE_COLUMNS}
        checked += 1
        ok = (
            line is not None and line["found"] == "yes" and int(line["contributors"]) == len(records)
            and all(Decimal(line[f"{c}_sum"]) == sums[c] for c in SCORE_COLUMNS)
        )
        match = match and ok
    return checked, match
