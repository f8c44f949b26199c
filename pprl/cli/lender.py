"""Finding a consenting applicant by pseudonym: pprl pseudonym request / evaluate / finish."""

from __future__ import annotations

import click

from pprl.cli import cli, say

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
def request_cmd(me, applicants, reference_column, identifier_column, identifier, out, state) -> None:
    """Blind your applicants' IDs for a platform to evaluate: it learns how many, never which.

    An ID that is not valid of its kind is left out: that applicant is "not
    found", never guessed.

    \b
    Example:
      pprl pseudonym request --me keys/bank_a.key --applicants applicants.csv \\
          --reference-column app_id --out bank_a.request.json --state bank_a.pseudonym-state
    """
    from pprl.protocol.files import load_key, request_pseudonyms_file

    result = request_pseudonyms_file(load_key(me), applicants, reference_column, identifier_column, out, state,
                                     identifier=identifier)
    say(f"wrote {result.path}: {result.applicants} applicants ({result.invalid} without a valid {identifier}, "
        "left out) and " + str(result.state_path) + " (private, mode 0600)")


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
