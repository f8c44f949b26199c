"""Finding a consenting applicant by pseudonym: pprl pseudonym request / evaluate / finish."""

from __future__ import annotations

import json

import click

from pprl.cli import cli, progress_wanted, say

FILE = click.Path(dir_okay=False)


@cli.group("pseudonym")
def pseudonym_group() -> None:
    """Pseudonyms of applicants' IDs through a platform's oblivious PRF (no one sees the ID).

    \b
    lender:    pprl pseudonym request  -> request.json (to a platform) + state (kept, 0600)
    platform:  pprl pseudonym evaluate -> response.json (back to the lender); the use is logged
    lender:    pprl pseudonym finish   -> reference,pseudonym per applicant
    """


@pseudonym_group.command("request")
@click.option("--me", required=True, type=FILE, help="Your identity key (lender).")
@click.option("--applicants", required=True, type=FILE,
              help="Your consenting applicants, a UTF-8 CSV with a header row.")
@click.option("--reference-column", required=True, help="Your own reference per applicant (e.g. app_id).")
@click.option("--identifier-column", default="resident_id", show_default=True,
              help="The column holding each applicant's ID.")
@click.option("--identifier", type=click.Choice(["resident_id", "mobile"]), default="resident_id",
              show_default=True, help="The kind of ID in --identifier-column.")
@click.option("--out", required=True, type=FILE, help="Request to write (goes to a platform).")
@click.option("--state", required=True, type=FILE,
              help="Private state to write (mode 0600; holds the IDs and the unblinding scalars): keep it.")
@click.option("--platform", "platform_url", metavar="URL",
              help="Have the platform's service evaluate the request at once, and finish: writes --pseudonyms.")
@click.option("--service-card", "service_cards", multiple=True, type=FILE,
              help="With --platform: the platform's card (default: your trust store, PPRL_TRUST).")
@click.option("--pseudonyms", "pseudonyms_out", type=FILE,
              help="With --platform: reference,pseudonym file to write (0600).")
def request_cmd(me, applicants, reference_column, identifier_column, identifier, out, state, platform_url,
                service_cards, pseudonyms_out) -> None:
    """Blind your applicants' IDs for a platform to evaluate: it learns how many, never which.

    An ID that is not valid of its kind is left out: that applicant is "not
    found", never guessed.

    \b
    Example:
      pprl pseudonym request --me keys/bank_a.key --applicants applicants.csv \\
          --reference-column app_id --out bank_a.request.json --state bank_a.pseudonym-state
    Evaluated by the platform's service at once:
      pprl pseudonym request ... --platform https://platform-1.example:8401 \
          --service-card keys/platform_1.card.json --pseudonyms bank_a.pseudonyms.csv
    """
    from pprl.protocol.files import load_key, request_pseudonyms_file

    if bool(platform_url) != bool(pseudonyms_out):
        raise click.UsageError("--platform and --pseudonyms go together")
    key = load_key(me)
    client = None
    if platform_url:
        from pprl.cli.service import connect

        client = connect(platform_url, key, service_cards, "platform")
    result = request_pseudonyms_file(key, applicants, reference_column, identifier_column, out, state,
                                     identifier=identifier)
    say(f"wrote {result.path}: {result.applicants} applicants ({result.invalid} without a valid {identifier}, "
        "left out) and " + str(result.state_path) + " (private, mode 0600)")
    if client is not None:
        from pathlib import Path

        from pprl.documents import write_atomic
        from pprl.protocol.files import finish_pseudonyms_file

        with client:
            response = client.send_document("/v1/pseudonyms", "pseudonym-request", Path(result.path).read_bytes())
        response_path = write_atomic(f"{out}.response.json", json.dumps(response, ensure_ascii=False).encode())
        path, count = finish_pseudonyms_file(key, state, response_path, [client.service], pseudonyms_out)
        say(f"wrote {path}: {count} pseudonyms from {platform_url} (private, mode 0600)")


@pseudonym_group.command("evaluate")
@click.option("--me", required=True, type=FILE, help="Your identity key (platform).")
@click.option("--secret", required=True, type=FILE, help="Your linkage secret file (the pseudonym key derives from it).")
@click.option("--request", "request_", required=True, type=FILE, help="A lender's request.")
@click.option("--cards", multiple=True, required=True, type=FILE,
              help="A registered lender's card; repeat. The request must be signed by one of them.")
@click.option("--log", required=True, type=FILE, help="Your evaluation log (JSON lines; created if absent).")
@click.option("--daily-quota", type=click.IntRange(0), default=10_000, show_default=True,
              help="Most pseudonyms one lender may ask for per UTC day.")
@click.option("--out", required=True, type=FILE, help="Response to write (goes back to the lender).")
def evaluate_cmd(me, secret, request_, cards, log, daily_quota, out) -> None:
    """Evaluate a lender's blinded request under the platforms' pseudonym key; log the use first.

    Refused, with nothing evaluated: a request not signed by one of --cards
    (lenders), one already answered, or one over the lender's daily quota.

    \b
    Example:
      pprl pseudonym evaluate --me keys/platform_1.key --secret platform_1.secret \\
          --request bank_a.request.json --cards keys/bank_a.card.json --log platform_1.oprf.log \\
          --out bank_a.response.json
    """
    from pprl.protocol.files import evaluate_pseudonyms_file, load_cards, load_key

    path = evaluate_pseudonyms_file(load_key(me), secret, request_, load_cards(cards), log, out,
                                    daily_quota=daily_quota)
    say(f"wrote {path}; logged in {log}")


@pseudonym_group.command("finish")
@click.option("--me", required=True, type=FILE, help="Your identity key (lender).")
@click.option("--state", required=True, type=FILE, help="The state `pprl pseudonym request` wrote.")
@click.option("--response", required=True, type=FILE, help="The platform's response.")
@click.option("--cards", multiple=True, required=True, type=FILE,
              help="A platform's card; repeat. The response must be signed by one of them.")
@click.option("--out", required=True, type=FILE, help="CSV to write: reference,pseudonym (mode 0600).")
def finish_cmd(me, state, response, cards, out) -> None:
    """Unblind the platform's response into your applicants' pseudonyms.

    \b
    Example:
      pprl pseudonym finish --me keys/bank_a.key --state bank_a.pseudonym-state \\
          --response bank_a.response.json --cards keys/platform_1.card.json --out bank_a.pseudonyms.csv
    """
    from pprl.protocol.files import finish_pseudonyms_file, load_cards, load_key

    path, count = finish_pseudonyms_file(load_key(me), state, response, load_cards(cards), out)
    say(f"wrote {path}: {count} pseudonyms (private, mode 0600)")


PURPOSE = click.Choice(["loan-application", "credit-limit-review", "post-loan-monitoring"])


@cli.command("query")
@click.option("--me", required=True, type=FILE, help="Your identity key (lender).")
@click.option("--pseudonyms", required=True, type=FILE, help="reference,pseudonym per applicant (`pprl pseudonym finish`).")
@click.option("--consents", required=True, type=FILE,
              help="CSV: reference,consent,purpose,issued,expires per applicant (consent = SHA-256 hex of the "
                   "applicant's signed authorisation; times ISO 8601 UTC).")
@click.option("--purpose", required=True, type=PURPOSE, help="Why you ask; every consent must be for it.")
@click.option("--out", required=True, type=FILE, help="Query to write (goes to the bureau).")
@click.option("--bureau", "bureau_url", metavar="URL", help="Send it to the bureau's service and write its answer.")
@click.option("--service-card", "service_cards", multiple=True, type=FILE,
              help="With --bureau: the bureau's card (default: your trust store, PPRL_TRUST).")
@click.option("--answer", "answer_out", type=FILE, help="With --bureau: the answer to write.")
def query_cmd(me, pseudonyms, consents, purpose, out, bureau_url, service_cards, answer_out) -> None:
    """Ask the bureau about consenting applicants, by pseudonym and with each one's consent.

    \b
    Example:
      pprl query --me keys/bank_a.key --pseudonyms bank_a.pseudonyms.csv --consents consents.csv \\
          --purpose loan-application --out bank_a.query.json
    Answered by the bureau's service at once:
      pprl query ... --out bank_a.query.json --bureau https://bureau.example:8400 \
          --service-card keys/bureau.card.json --answer bank_a.answer.json
    """
    from pprl.protocol.files import load_key, query_file

    if bool(bureau_url) != bool(answer_out):
        raise click.UsageError("--bureau and --answer go together")
    key = load_key(me)
    client = None
    if bureau_url:
        from pprl.cli.service import connect

        client = connect(bureau_url, key, service_cards, "bureau")
    path = query_file(key, pseudonyms, consents, purpose, out)
    say(f"wrote {path}")
    if client is not None:
        from pathlib import Path

        from pprl.documents import Answer, save, verify

        with client:
            raw = client.send_document("/v1/queries", "query", Path(path).read_bytes())
        answer = Answer.from_dict(raw, f"{bureau_url} answer")
        verify(answer, [client.service], source=answer.source, role="bureau")
        save(answer_out, answer)
        say(f"wrote {answer_out}: {answer.header.found} of {answer.header.count} applicants found")


@cli.command("answer")
@click.option("--me", required=True, type=FILE, help="Your identity key (bureau).")
@click.option("--registry", required=True, metavar="PATH|URL", help="The registry (SQLite file or PostgreSQL URL).")
@click.option("--query", "query_", required=True, type=FILE, help="A lender's query.")
@click.option("--cards", multiple=True, required=True, type=FILE,
              help="A registered lender's card; repeat. The query must be signed by one of them.")
@click.option("--policy", type=FILE,
              help="Release policy (JSON): per purpose the columns released, per-platform sums or not, the "
                   "minimum platforms; and the daily quota. Without it every purpose gets every column's sums.")
@click.option("--min-platforms", type=click.IntRange(1), default=1, show_default=True,
              help="Without --policy: answer an applicant only when at least this many platforms hold a record "
                   "of them.")
@click.option("--daily-quota", type=click.IntRange(0), default=1000, show_default=True,
              help="Without --policy: most applicants one lender may ask about per UTC day.")
@click.option("--receipts", type=click.Path(file_okay=False),
              help="Also write <platform>.receipt.json here: each contributing platform's signed receipt.")
@click.option("--out", required=True, type=FILE, help="Answer to write (goes to the authority, then the lender).")
def answer_cmd(me, registry, query_, cards, policy, min_platforms, daily_quota, receipts, out) -> None:
    """Answer a lender's query under encryption: only the lender can read the scores.

    Refused, with nothing answered (and the refusal recorded): a query not
    signed by one of --cards, without or with an expired, foreign or replayed
    consent, already answered, over the lender's daily quota, or for a
    purpose the release policy does not answer. Each applicant found gets
    the sum of its records' encrypted scores (or each platform's sum, if the
    policy says so) plus a random mask only the lender can remove; columns
    the purpose may not read get a mask the lender never sees. Who asked,
    when and why is kept in the registry against every entity found.

    \b
    A policy file, e.g.:
      {"daily_quota": 1000, "min_platforms": 1, "purposes": {
         "loan-application": {"columns": ["repay_score", "spend_score"], "min_platforms": 2},
         "post-loan-monitoring": {"columns": ["repay_score"], "per_platform": true}}}
    (a purpose left out is not answered).

    \b
    Example:
      pprl answer --me keys/bureau.key --registry bureau/registry.db --query bank_a.query.json \\
          --cards keys/bank_a.card.json --policy bureau/policy.json --out bank_a.answer.json
    """
    from pprl.documents import Query, load, save
    from pprl.errors import KeyFormatError
    from pprl.protocol.files import load_cards, load_key
    from pprl.protocol.query import AnswerPolicy
    from pprl.registry import Registry

    key = load_key(me)
    if key.role != "bureau":
        raise KeyFormatError(f"{me}: only the bureau answers queries; '{key.name}' is a {key.role}")
    if policy is not None:
        from pprl.protocol.files import load_policy

        context = click.get_current_context()
        for name in ("min_platforms", "daily_quota"):
            if context.get_parameter_source(name) != click.core.ParameterSource.DEFAULT:
                raise click.UsageError(f"--{name.replace('_', '-')} goes in the --policy file when one is given")
        rules = load_policy(policy)
    else:
        rules = AnswerPolicy(min_platforms=min_platforms, daily_quota=daily_quota)
    doc = load(query_, Query)
    with Registry(registry) as reg:
        answer = reg.answer(key, doc, load_cards(cards), rules)
    path = save(out, answer)
    say(f"wrote {path}: {answer.header.found} of {answer.header.count} applicants found")
    if receipts:
        from pathlib import Path

        from pprl.protocol.query import make_receipts

        for platform, receipt in make_receipts(key, answer).items():
            say(f"wrote {save(Path(receipts) / f'{platform}.receipt.json', receipt)} (for {platform})")


@cli.command("decrypt-answer")
@click.option("--me", required=True, type=FILE, help="Your identity key (the authority, or a threshold key holder).")
@click.option("--paillier-key", type=FILE, help="Single key: paillier.key from `pprl paillier keygen`.")
@click.option("--share", type=FILE, help="Threshold key: your <holder>.share.json (writes your part, for the lender).")
@click.option("--answer", "answer_", required=True, type=FILE, help="The bureau's answer.")
@click.option("--cards", multiple=True, required=True, type=FILE,
              help="The bureau's card and the registered lenders' cards (with --share also the dealer's); repeat.")
@click.option("--policy", type=FILE,
              help="Your release policy (JSON, as for `pprl answer`): an answer releasing more is refused. "
                   "Default: every purpose, every column's sums, one platform.")
@click.option("--audit-log", required=True, type=FILE, help="Audit log to record the decryption in first.")
@click.option("--out", required=True, type=FILE,
              help="The masked decryption (with --share: your part) to write; it goes to the lender.")
def decrypt_answer_cmd(me, paillier_key, share, answer_, cards, policy, audit_log, out) -> None:
    """Decrypt an answer's masked sums for its lender (you see only random values); log it first.

    Checked first: the answer is signed by the pinned bureau, for a lender
    among --cards whose consents hold, and releases no more than your
    policy allows. With a threshold key each of T holders writes a part
    encrypted for the lender, who combines them (`pprl open-answer --parts`).

    \b
    Single key:
      pprl decrypt-answer --me keys/authority.key --paillier-key authority/paillier.key \\
          --answer bank_a.answer.json --cards keys/bureau.card.json --cards keys/bank_a.card.json \\
          --audit-log audit.log --out bank_a.decryption.json
    Threshold key (each holder):
      pprl decrypt-answer --me keys/holder_a.key --share authority/holder_a.share.json \\
          --answer bank_a.answer.json --cards keys/bureau.card.json --cards keys/bank_a.card.json \\
          --cards keys/authority.card.json --audit-log holder_a.audit.log --out holder_a.answer-part.json
    """
    from pprl.protocol.files import answer_part_file, decrypt_answer_file, load_cards, load_key, load_policy

    if bool(paillier_key) == bool(share):
        raise click.UsageError("give --paillier-key (single key) or --share (threshold key), one of them")
    rules = load_policy(policy) if policy else None
    if share:
        path = answer_part_file(load_key(me), share, answer_, load_cards(cards), audit_log, out, policy=rules,
                                progress=progress_wanted())
        say(f"wrote {path} (your part, encrypted for the lender); logged in {audit_log}")
        return
    path = decrypt_answer_file(load_key(me), paillier_key, answer_, load_cards(cards), audit_log, out, policy=rules)
    say(f"wrote {path}; logged in {audit_log}")


@cli.command("open-answer")
@click.option("--me", required=True, type=FILE, help="Your identity key (lender).")
@click.option("--answer", "answer_", required=True, type=FILE, help="The bureau's answer.")
@click.option("--decryption", type=FILE, help="Single key: the authority's decryption of it.")
@click.option("--parts", multiple=True, type=FILE,
              help="Threshold key: a holder's part of it; repeat (T of them).")
@click.option("--authority", "authority_url", metavar="URL",
              help="Single key: ask the authority's service for the decryption (written to --decryption if given).")
@click.option("--holders", "holder_urls", multiple=True, metavar="URL",
              help="Threshold key: ask each holder's service for its part; repeat (T of them).")
@click.option("--service-card", "service_cards", multiple=True, type=FILE,
              help="With --authority / --holders: their cards (default: your trust store, PPRL_TRUST).")
@click.option("--pseudonyms", required=True, type=FILE, help="Your reference,pseudonym file for this query.")
@click.option("--cards", multiple=True, required=True, type=FILE,
              help="The bureau's and the authority's cards (threshold key: the dealer's).")
@click.option("--out", required=True, type=FILE,
              help="CSV to write: app_id,found,contributors,<score>_sum... and, if the policy gives them, "
                   "<platform>:<score> columns (0600).")
def open_answer_cmd(me, answer_, decryption, parts, authority_url, holder_urls, service_cards, pseudonyms, cards,
                    out) -> None:
    """Remove the masks and read your applicants' scores (the columns the purpose releases).

    \b
    Single key:
      pprl open-answer --me keys/bank_a.key --answer bank_a.answer.json --decryption bank_a.decryption.json \\
          --pseudonyms bank_a.pseudonyms.csv --cards keys/bureau.card.json --cards keys/authority.card.json \\
          --out bank_a.scores.csv
    Threshold key:
      pprl open-answer --me keys/bank_a.key --answer bank_a.answer.json --parts holder_a.answer-part.json \\
          --parts holder_b.answer-part.json --pseudonyms bank_a.pseudonyms.csv --cards keys/bureau.card.json \\
          --cards keys/authority.card.json --out bank_a.scores.csv
    Through the key holders' services:
      pprl open-answer --me keys/bank_a.key --answer bank_a.answer.json --authority https://authority.example:8402 \
          --service-card keys/authority.card.json --pseudonyms bank_a.pseudonyms.csv \
          --cards keys/bureau.card.json --cards keys/authority.card.json --out bank_a.scores.csv
    """
    from pprl.protocol.files import load_cards, load_key, open_answer_file

    key = load_key(me)
    if authority_url or holder_urls:
        if (authority_url and holder_urls) or parts:
            raise click.UsageError("give --authority (single key) or --holders (threshold key), not both, "
                                   "and no --parts")
        decryption, parts = _fetch_decryptions(key, answer_, authority_url, list(holder_urls), service_cards,
                                               decryption, out)
    if bool(decryption) == bool(parts):
        raise click.UsageError("give --decryption (single key) or --parts (threshold key), one of them")
    path, asked, found = open_answer_file(key, answer_, decryption or list(parts), pseudonyms,
                                          load_cards(cards), out)
    say(f"wrote {path}: {found} of {asked} applicants found (private, mode 0600)")


def _fetch_decryptions(key, answer: str, authority_url: str | None, holder_urls: list[str], service_cards,
                       decryption: str | None, out: str) -> tuple[str | None, list[str]]:
    """Ask the authority's (or each holder's) service to decrypt ``answer``; the files its answers went to."""
    from pathlib import Path

    from pprl.cli.service import connect
    from pprl.documents import write_atomic

    body = Path(answer).read_bytes()
    if authority_url:
        with connect(authority_url, key, service_cards, "authority") as client:
            doc = client.send_document("/v1/answer-decryptions", "answer", body)
        path = decryption or f"{out}.decryption.json"
        write_atomic(path, json.dumps(doc, ensure_ascii=False).encode("utf-8"))
        say(f"wrote {path} (from {authority_url})")
        return str(path), []
    paths = []
    for i, url in enumerate(holder_urls, start=1):
        with connect(url, key, service_cards, "authority") as client:
            doc = client.send_document("/v1/answer-decryptions", "answer", body)
        path = f"{out}.part{i}.json"
        write_atomic(path, json.dumps(doc, ensure_ascii=False).encode("utf-8"))
        say(f"wrote {path} (from {url})")
        paths.append(path)
    return None, paths
