"""Authority commands: paillier keygen, decrypt, audit verify."""

from __future__ import annotations

import click

from pprl.audit import verify_log
from pprl.cli import cli, progress_wanted, say
from pprl.parties.authority import decrypt_release, paillier_keygen
from pprl.parties.identity import load_cards, load_key

FILE = click.Path(dir_okay=False)


@cli.group("paillier")
def paillier_group() -> None:
    """The authority's Paillier keys."""


@paillier_group.command("keygen")
@click.option("--me", required=True, type=FILE, help="Your identity key (authority).")
@click.option("--bits", type=click.IntRange(2048), default=2048, show_default=True, help="Modulus size.")
@click.option("--dir", "directory", required=True, type=click.Path(file_okay=False),
              help="Writes paillier.pub.json (signed, public) and paillier.key (0600) here.")
def keygen_cmd(me, bits, directory) -> None:
    """Generate the Paillier keypair that platforms encrypt scores under.

    \b
    Example:
      pprl paillier keygen --me keys/authority.key --bits 2048 --dir authority
    """
    say(f"generating a {bits}-bit Paillier key (a few seconds)...")
    result = paillier_keygen(load_key(me), bits, directory)
    say(f"wrote {result.public_path} (send to platforms) and {result.private_path} (private, mode 0600)")
    click.echo(f"paillier key fingerprint {result.fingerprint}")


@cli.command("decrypt")
@click.option("--me", required=True, type=FILE, help="Your identity key (authority).")
@click.option("--paillier-key", required=True, type=FILE, help="paillier.key from `pprl paillier keygen`.")
@click.option("--release", required=True, type=FILE, help="Release file from `pprl aggregate`.")
@click.option("--cards", multiple=True, type=FILE, help="The bureau's card: pin who must have signed the release.")
@click.option("--audit-log", required=True, type=FILE, help="Audit log to append this release to (created if absent).")
@click.option("--out", required=True, type=FILE, help="CSV to write: entity_id,contributors,<score>_sum...")
def decrypt_cmd(me, paillier_key, release, cards, audit_log, out) -> None:
    """Decrypt a release's per-entity sums and record the release in the audit log.

    \b
    Example:
      pprl decrypt --me keys/authority.key --paillier-key authority/paillier.key \\
          --release release.json --audit-log audit.log --out aggregates.csv
    """
    result = decrypt_release(
        load_key(me), paillier_key, release, audit_log, out,
        cards=load_cards(cards) if cards else None, progress=progress_wanted(),
    )
    say(f"wrote {result.path}: {result.entities} entities; audit log entry {result.audit_entry}")


@cli.group("audit")
def audit_group() -> None:
    """The tamper-evident release log."""


@audit_group.command("verify")
@click.argument("log", type=click.Path(dir_okay=False, exists=True))
@click.option("--cards", multiple=True, type=FILE, help="A card of a party allowed to sign entries; repeat.")
def audit_verify_cmd(log, cards) -> None:
    """Check the log's hash chain and every entry's signature; name the first bad entry.

    \b
    Example:
      pprl audit verify audit.log --cards keys/authority.card.json
    """
    report = verify_log(log, load_cards(cards) if cards else None)
    click.echo(f"{log}: {report.entries} entries, chain and signatures OK (head {report.head[:16]})")
