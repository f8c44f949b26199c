"""Bureau commands: link, aggregate."""

from __future__ import annotations

import click

from pprl.cli import cli, progress_wanted, say
from pprl.parties.bureau import link
from pprl.parties.release import aggregate
from pprl.parties.identity import load_cards, load_key

FILE = click.Path(dir_okay=False)


@cli.command("link")
@click.option("--me", required=True, type=FILE, help="Your identity key (bureau).")
@click.option("--cards", multiple=True, required=True, type=FILE,
              help="A platform's card; repeat once per platform. Submissions must be signed by one of them.")
@click.option("--submissions", multiple=True, required=True, type=FILE, help="A submission; repeat once per platform.")
@click.option("--threshold", type=click.FloatRange(0.0, 1.0, min_open=True), default=0.8, show_default=True,
              help="Dice similarity at or above which two records may be the same person.")
@click.option("--out", required=True, type=FILE, help="Linkage file to write.")
def link_cmd(me, cards, submissions, threshold, out) -> None:
    """Verify submissions, compare encodings (Dice) and group records into entities.

    Each entity holds at most one record per platform and at least two
    platforms. The bureau sees only encodings and opaque tokens.

    \b
    Example:
      pprl link --me keys/bureau.key --cards keys/platform_1.card.json --cards keys/platform_2.card.json \\
          --submissions platform_1.submission.json --submissions platform_2.submission.json \\
          --threshold 0.8 --out linkage.json
    """
    result = link(load_key(me), load_cards(cards), submissions, threshold, out, progress=progress_wanted())
    say(
        f"wrote {result.path}: {result.entities} entities from {result.linked_records} records "
        f"({result.candidate_pairs} candidate pairs at threshold {threshold})"
    )


@cli.command("aggregate")
@click.option("--me", required=True, type=FILE, help="Your identity key (bureau).")
@click.option("--linkage", required=True, type=FILE, help="Linkage file written by `pprl link`.")
@click.option("--submissions", multiple=True, required=True, type=FILE, help="A submission; repeat once per platform.")
@click.option("--cards", multiple=True, type=FILE, help="Platform cards to check the submissions' signers against.")
@click.option("--min-contributors", type=click.IntRange(1), default=2, show_default=True,
              help="Release an entity only if at least this many platforms contributed to it.")
@click.option("--out", required=True, type=FILE, help="Release file to write (ciphertexts only).")
def aggregate_cmd(me, linkage, submissions, cards, min_contributors, out) -> None:
    """Sum every score column per entity under encryption, for the authority to decrypt.

    \b
    Example:
      pprl aggregate --me keys/bureau.key --linkage linkage.json \\
          --submissions platform_1.submission.json --submissions platform_2.submission.json \\
          --min-contributors 2 --out release.json
    """
    result = aggregate(
        load_key(me), linkage, submissions, min_contributors, out, cards=load_cards(cards) if cards else None
    )
    say(f"wrote {result.path}: {result.released} entities released, {result.suppressed} held back (< {min_contributors} platforms)")
