"""Platform commands: submit, encode."""

from __future__ import annotations

import json
from collections.abc import Sequence
from decimal import Decimal, InvalidOperation
from pathlib import Path

import click

from pprl.cli import cli, engine_for, engine_options, progress_wanted, say, split_columns
from pprl.errors import DataValidationError

FILE = click.Path(dir_okay=False)


def parse_clip(specs: Sequence[str]) -> dict[str, tuple[Decimal, Decimal]]:
    """``COL=LO:HI`` strings -> {column: (lo, hi)}; DataValidationError if malformed."""
    out: dict[str, tuple[Decimal, Decimal]] = {}
    for spec in specs:
        column, eq, bounds = spec.partition("=")
        lo_text, colon, hi_text = bounds.partition(":")
        column = column.strip()
        if not (column and eq and colon):
            raise DataValidationError(f"--clip '{spec}': expected COL=LO:HI, e.g. repay_score=0:1000")
        try:
            lo, hi = Decimal(lo_text.strip()), Decimal(hi_text.strip())
        except InvalidOperation:
            raise DataValidationError(f"--clip '{spec}': LO and HI must be numbers") from None
        if column in out:
            raise DataValidationError(f"--clip names column '{column}' twice")
        out[column] = (lo, hi)
    return out


@cli.command("submit")
@click.option("--me", required=True, type=FILE, help="Your identity key (platform).")
@click.option("--schema", required=True, type=FILE, help="Linkage schema (clkhash v3 JSON).")
@click.option("--secret", required=True, type=FILE, help="Combined linkage secret file.")
@click.option("--paillier", type=FILE, help="The authority's paillier.pub.json (needed with --scores).")
@click.option("--authority", type=FILE,
              help="The authority's card: pin who must have signed --paillier (required with --paillier, unless "
                   "PPRL_TRUST names your folder of pinned cards).")
@click.option("--data", required=True, type=FILE, help="Your users, a UTF-8 CSV with a header row.")
@click.option("--id-column", required=True, help="Your own user id column (kept only in the .map.csv).")
@click.option("--scores", multiple=True, help="Score column(s) to encrypt: COL[,COL...]; omit for linkage only.")
@click.option("--clip", multiple=True, metavar="COL=LO:HI",
              help="Clip score column COL to [LO, HI] before encryption and declare the range in the "
                   "signed header (needed for release noise); repeat once per column.")
@click.option("--plain-encryption", is_flag=True,
              help="Encrypt with classic phe-style r^n randomness instead of the key's DJN base "
                   "(about 10x slower; for a platform that will not rely on the key holder's DJN base).")
@click.option("--records-per-ciphertext", type=click.IntRange(1, 16), default=1, show_default=True,
              help="Pack this many records into each ciphertext (at most 5 with a 2048-bit key): a "
                   "submission about N times smaller and faster to encrypt, more work for the bureau. "
                   "Every platform in a run must use the same N.")
@click.option("--pseudonym-column",
              help="Column holding each user's resident ID (or mobile, with --pseudonym-kind): the submission "
                   "then carries each record's pseudonym, by which a lender finds a consenting applicant "
                   "without anyone seeing the ID.")
@click.option("--pseudonym-kind", type=click.Choice(["resident_id", "mobile"]), default="resident_id",
              show_default=True, help="The identifier kind in --pseudonym-column.")
@click.option("--run", help="The run id the bureau announced for this linkage (goes into the signed header; a "
              "schema with clkConfig.rotate also derives this run's key from it).")
@click.option("--out", required=True, type=FILE, help="Submission file to write.")
@click.option("--format", "format_", type=click.Choice(["json", "chunked"]), default="json", show_default=True,
              help="json: one signed JSON document (base64 payload). chunked: the payload as binary chunks of "
                   "65,536 records, each listed by its SHA-256 in a signed trailer; about 25% smaller, written and "
                   "read without the JSON copies (for 100k+ records). `pprl link`, `aggregate`, `registry update`, "
                   "`inspect` and the bureau's service (--to) take both.")
@click.option("--to", "to_url", metavar="URL",
              help="Also send it to the bureau's service (in chunks, resumed after a broken connection).")
@click.option("--service-card", "service_cards", multiple=True, type=FILE,
              help="With --to: the bureau's card (default: your trust store, PPRL_TRUST).")
@engine_options
def submit_cmd(me, schema, secret, paillier, authority, data, id_column, scores, clip, plain_encryption,
               records_per_ciphertext, pseudonym_column, pseudonym_kind, run, out, format_, to_url, service_cards,
               engine, scheduler, dask_workers) -> None:
    """Encode identifiers into CLKs, encrypt scores, and sign one submission for the bureau.

    Also writes OUT.map.csv (token,<id-column>; mode 0600): your private way
    back from the bureau's tokens to your own users. Never send it.

    \b
    Example:
      pprl submit --me keys/platform_1.key --schema examples/schema-cn.json \\
          --secret platform_1.secret --paillier authority/paillier.pub.json \\
          --authority keys/authority.card.json --data platform_1.csv --id-column user_id --scores repay_score,spend_score,travel_score \\
          --clip repay_score=0:1000 --clip spend_score=0:50000 --out platform_1.submission.json
    Sent to the bureau's service as well:
      pprl submit ... --out platform_1.submission.json --to https://bureau.example:8400 \
          --service-card keys/bureau.card.json
    Encoded and encrypted on a Dask cluster (workers in your own network: they get the linkage secret):
      pprl submit ... --engine dask --scheduler tls://dask.platform.internal:8786
    A large submission in the chunked form:
      pprl submit ... --format chunked --out platform_1.submission.pprl
    """
    from pprl.protocol.files import load_key, pinned_cards, submit

    key = load_key(me)
    client = None
    if to_url:  # before the work: a wrong URL or an unpinned bureau fails at once
        from pprl.cli.service import connect

        client = connect(to_url, key, service_cards, "bureau")
    pins = pinned_cards([authority] if authority else [], "authority", "who signed --paillier") if paillier else None
    with engine_for(engine, scheduler, dask_workers) as where:
        result = submit(
            key,
            schema,
            secret,
            data,
            id_column,
            out,
            paillier=paillier,
            scores=split_columns(scores),
            authority=pins,
            progress=progress_wanted(),
            clip=parse_clip(clip),
            encryption="plain" if plain_encryption else None,
            records_per_ciphertext=records_per_ciphertext,
            pseudonym_column=pseudonym_column,
            pseudonym_kind=pseudonym_kind,
            run=run,
            engine=where,
            format=format_,
        )
    say(f"wrote {result.path} ({result.records} records, scores: {', '.join(result.score_columns) or 'none'})")
    say(f"wrote {result.map_path} (private, mode 0600: keep it)")
    for note in result.notes:
        say(f"note: {note}")
    if client is not None:
        from pathlib import Path

        with client:
            summary = client.upload("submission", Path(result.path).read_bytes())
        say(f"sent to {to_url}: submission {summary['document']} ({summary.get('records')} records)")


@cli.command("encode")
@click.option("--schema", required=True, type=FILE, help="Linkage schema (clkhash v3 JSON).")
@click.option("--secret", type=FILE, help="pprl linkage secret file (from `pprl secret combine`).")
@click.option("--clkhash-secret", type=FILE,
              help="File whose bytes are the secret as given to clkhash (one trailing newline is ignored).")
@click.option("--data", required=True, type=FILE, help="CSV with a header row naming the schema's features.")
@click.option("--run", help="The run id, for a schema that rotates its key per run (clkConfig.rotate).")
@click.option("--out", required=True, type=FILE, help="Output in clkhash's format: {\"clks\": [base64, ...]}.")
def encode_cmd(schema, secret, clkhash_secret, data, run, out) -> None:
    """Encode records into CLKs only, in clkhash's output format (feeds anonlink's tools).

    With a plain clkhash v3 schema and --clkhash-secret the CLKs are identical
    to clkhash's; pprl-extended schemas ("version": "3+pprl", normalisers)
    are pprl-only.

    \b
    Examples:
      pprl encode --schema examples/schema-cn.json --secret platform_1.secret \\
          --data platform_1.csv --out platform_1.clks.json
      pprl encode --schema examples/schema-cn-clkhash.json --clkhash-secret secret.txt \\
          --data people.csv --out clks.json
    """
    from pprl.documents import write_atomic
    from pprl.encoding.clk import encode_records, to_clkhash_json
    from pprl.encoding.schema import load_schema
    from pprl.protocol.files import load_secret
    from pprl.protocol.tables import read_table

    if bool(secret) == bool(clkhash_secret):
        raise click.UsageError("give exactly one of --secret and --clkhash-secret")
    if secret:
        secret_bytes = load_secret(secret).secret
    else:
        secret_bytes = Path(clkhash_secret).read_bytes()
        if secret_bytes.endswith(b"\n"):
            secret_bytes = secret_bytes[:-1]
        if not secret_bytes:
            raise DataValidationError(f"{clkhash_secret}: the secret file is empty")
    frame = read_table(data)
    try:
        clks = encode_records(frame, load_schema(schema), secret_bytes, progress=progress_wanted(), run=run)
    except DataValidationError as exc:
        raise DataValidationError(f"{data}: {exc}") from None
    write_atomic(out, json.dumps(to_clkhash_json(clks)).encode("utf-8"))
    say(f"wrote {out} ({len(clks)} CLKs)")
