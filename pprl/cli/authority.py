"""Authority commands: paillier keygen, decrypt, audit verify."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from pprl.cli import cli, progress_wanted, say
from pprl.errors import OptionError

if TYPE_CHECKING:
    from pprl.documents import Card

FILE = click.Path(dir_okay=False)


@cli.group("paillier")
def paillier_group() -> None:
    """The authority's Paillier keys."""


@paillier_group.command("keygen")
@click.option("--me", required=True, type=FILE, help="Your identity key (authority).")
@click.option("--bits", type=click.IntRange(2048), default=2048, show_default=True, help="Modulus size.")
@click.option("--dir", "directory", required=True, type=click.Path(file_okay=False),
              help="Writes paillier.pub.json (signed, public) and paillier.key (0600) or the holders' shares here.")
@click.option("--threshold", type=click.IntRange(1), help="T of a T-of-n threshold key (with --holders).")
@click.option("--holders", multiple=True, type=FILE,
              help="A key holder's card; repeat once per holder. Each gets DIR/<holder>.share.json.")
def keygen_cmd(me, bits, directory, threshold, holders) -> None:
    """Generate the Paillier keypair that platforms encrypt scores under.

    With --threshold T --holders CARD..., the key is split T-of-n among the
    holders (safe primes, Shoup-style shares with verification keys); the full
    private key exists nowhere after keygen, and any T holders together
    decrypt a release (`pprl decrypt --partial` / `--combine`).

    \b
    Examples:
      pprl paillier keygen --me keys/authority.key --bits 2048 --dir authority
      pprl paillier keygen --me keys/authority.key --dir authority --threshold 2 \\
          --holders keys/holder_a.card.json --holders keys/holder_b.card.json --holders keys/holder_c.card.json
    """
    from pprl.protocol.files import load_cards, load_key, paillier_keygen, threshold_keygen

    key = load_key(me)
    if bool(threshold) != bool(holders):
        raise click.UsageError("--threshold and --holders go together")
    if threshold:
        say(f"dealing a {bits}-bit {threshold}-of-{len(holders)} threshold Paillier key (safe primes; can take a while)...")
        dealt = threshold_keygen(key, bits, threshold, load_cards(holders), directory)
        say(f"wrote {dealt.public_path} (send to platforms)")
        for name, path in dealt.share_paths.items():
            say(f"wrote {path} (for {name} only)")
        click.echo(f"paillier key fingerprint {dealt.fingerprint} ({threshold}-of-{len(holders)})")
        return
    say(f"generating a {bits}-bit Paillier key (a few seconds)...")
    result = paillier_keygen(key, bits, directory)
    say(f"wrote {result.public_path} (send to platforms) and {result.private_path} (private, mode 0600)")
    click.echo(f"paillier key fingerprint {result.fingerprint}")


@cli.command("decrypt")
@click.option("--me", type=FILE,
              help="Your identity key: the authority's (single key), a holder's (--partial), or, optionally, "
                   "the combiner's (--combine: signs the audit entry, opens parts made --for it).")
@click.option("--paillier-key", type=FILE, help="paillier.key from `pprl paillier keygen` (single-key mode).")
@click.option("--release", required=True, type=FILE, help="Release file from `pprl aggregate`.")
@click.option("--cards", multiple=True, type=FILE,
              help="The bureau's card: pin who signed the release (with --partial and --combine also the "
                   "authority's: the key's dealer); repeat. Default: PPRL_TRUST's folder of pinned cards.")
@click.option("--audit-log", type=FILE, help="Audit log to append this release to (created if absent).")
@click.option("--out", required=True, type=FILE,
              help="CSV to write: entity_id,contributors,<score>_sum... (with --partial: the part file).")
@click.option("--partial", is_flag=True, help="Threshold key: write this holder's decryption part.")
@click.option("--share", type=FILE, help="With --partial: your <holder>.share.json.")
@click.option("--for", "combiner", type=FILE,
              help="With --partial: encrypt the part for this combiner's card (who then combines with --me). "
                   "Required unless --public-part.")
@click.option("--public-part", is_flag=True,
              help="With --partial: leave the part readable by whoever holds T parts (Shoup's public combining) "
                   "instead of encrypting it --for a combiner; send it only to the combiner.")
@click.option("--combine", is_flag=True, help="Threshold key: combine T holders' parts into the CSV.")
@click.option("--parts", multiple=True, type=FILE, help="With --combine: a holder's part; repeat once per holder.")
@click.option("--paillier", type=FILE,
              help="With --combine: the threshold key's paillier.pub.json (default: the dealer-signed copy "
                   "every part carries; pin the dealer with --cards).")
@click.option("--linkage", type=FILE,
              help="The bureau's signed linkage the release follows: the release is recomputed from it and "
                   "--submissions (the platforms' cards in --cards), never taken on the bureau's word.")
@click.option("--submissions", multiple=True, type=FILE, help="With --linkage: a submission; repeat per platform.")
@click.option("--session", type=FILE,
              help="A PSI release: the bureau's session; with --rounds, what the release is recomputed from.")
@click.option("--rounds", multiple=True, type=FILE,
              help="With --session: a platform's fully blinded list; repeat once per platform.")
@click.option("--min-contributors", type=click.IntRange(1), default=2, show_default=True,
              help="Your own floor: refuse a release with an entity from fewer platforms, whatever its header says.")
@click.option("--max-epsilon", type=click.FloatRange(min=0), default=None,
              help="Refuse unless the release is noised and every score column's running epsilon in the "
                   "audit log (basic composition, this release included) stays at most this.")
def decrypt_cmd(me, paillier_key, release, cards, audit_log, out, partial, share, combiner, public_part, combine,
                parts, paillier, linkage, submissions, session, rounds, min_contributors, max_epsilon) -> None:
    """Check a release against what it claims to sum, decrypt it, and record it in the audit log.

    Nothing is taken on the bureau's word: the release is recomputed from the
    signed linkage and submissions (--linkage, --submissions) or, for a PSI
    release, from the session and the platforms' final lists (--session,
    --rounds), under your own --min-contributors floor.

    \b
    Single key:
      pprl decrypt --me keys/authority.key --paillier-key authority/paillier.key \\
          --release release.json --linkage linkage.json --submissions platform_1.sub.json \\
          --submissions platform_2.sub.json --cards keys/bureau.card.json \\
          --cards keys/platform_1.card.json --cards keys/platform_2.card.json \\
          --audit-log audit.log --out aggregates.csv
    Threshold key (each of T holders, then whoever combines; the same evidence):
      pprl decrypt --partial --me keys/holder_a.key --share authority/holder_a.share.json \\
          --release release.json --linkage linkage.json --submissions ... \\
          --cards keys/bureau.card.json --cards keys/authority.card.json --cards ... \\
          --for keys/authority.card.json --out holder_a.part.json
      pprl decrypt --combine --me keys/authority.key --parts holder_a.part.json --parts holder_b.part.json \\
          --release release.json --linkage linkage.json --submissions ... --cards ... \\
          --audit-log audit.log --out aggregates.csv
    Parts carry the dealer-signed public key and each holder's signed approval;
    the audit entry records the approvals (and is signed too with --me).
    --cards pins the bureau (release), the platforms (submissions, lists) and,
    with --partial and --combine, the dealer (key); without --cards,
    PPRL_TRUST's folder of pinned cards.
    """
    from pprl.protocol.files import (
        combine_release_parts,
        decrypt_release,
        load_cards,
        load_key,
        partial_decrypt_release,
        pinned_cards,
        psi_evidence,
        release_evidence,
    )

    if partial and combine:
        raise click.UsageError("--partial and --combine are alternatives")
    if (combiner or public_part) and not partial:
        raise click.UsageError("--for and --public-part go with --partial")
    if partial and bool(combiner) == bool(public_part):
        raise click.UsageError("--partial needs --for COMBINER_CARD (the part is encrypted for it), or --public-part")
    if not me and not combine:
        raise click.UsageError("--me is required (only --combine can do without it)")
    trusted = pinned_cards(cards, "cards", "who signed the release")
    bureaus = _role(trusted, "bureau", "the bureau that signed the release")
    if bool(linkage) != bool(submissions) or bool(session) != bool(rounds):
        raise click.UsageError("--linkage goes with --submissions, --session with --rounds")
    if bool(linkage) == bool(session):
        raise click.UsageError("give what the release is checked against: --linkage and --submissions "
                               "(a linkage's release) or --session and --rounds (a PSI release)")
    platforms = _role(trusted, "platform", "the platforms whose data the release sums")
    evidence = (release_evidence(linkage, submissions, platforms, min_contributors) if linkage
                else psi_evidence(session, rounds, platforms, min_contributors))
    key = load_key(me) if me else None
    if partial:
        if key is None or not share:
            raise click.UsageError("--partial needs --share")
        target = load_cards([combiner])[0] if combiner else None
        dealers = _role([c for c in trusted if c.fingerprint != key.card.fingerprint], "authority",
                        "the authority that dealt the key")
        path = partial_decrypt_release(key, share, release, out, cards=bureaus, dealer=dealers, combiner=target,
                                       evidence=evidence,
                                       progress=progress_wanted())
        who = f"encrypted for {target.name}" if target else "readable by whoever combines: send it only to them"
        say(f"wrote {path}: {key.name}'s decryption part ({who})")
        return
    if not audit_log:
        raise click.UsageError("--audit-log is required to decrypt")
    if combine:
        if not parts:
            raise click.UsageError("--combine needs --parts (repeated, one per holder)")
        result = combine_release_parts(key, parts, release, paillier, audit_log, out, cards=bureaus,
                                       authority=_role(trusted, "authority", "the authority that dealt the key"),
                                       progress=progress_wanted(), evidence=evidence,
                                       max_epsilon=max_epsilon)
    else:
        if key is None or not paillier_key:
            raise click.UsageError("give --paillier-key (or --partial / --combine for a threshold key)")
        result = decrypt_release(key, paillier_key, release, audit_log, out, cards=bureaus, evidence=evidence,
                                 progress=progress_wanted(), max_epsilon=max_epsilon)
    say(f"wrote {result.path} (mode 0600): {result.entities} entities; audit log entry {result.audit_entry}")
    if result.unreadable:
        say(f"note: {result.unreadable} entities' sums could not be read (a platform submitted a value out of range); "
            "their cells are empty. Only you see this: the log does not say it.")


def _role(cards: list[Card], role: str, what: str) -> list[Card]:
    """The pinned cards of ``role``; an error naming --cards when there is none."""
    chosen = [c for c in cards if c.role == role]
    if not chosen:
        raise OptionError(f"{{cards}} holds no {role} card: pin {what}", "cards")
    return chosen


@cli.group("audit")
def audit_group() -> None:
    """The tamper-evident release log."""


@audit_group.command("verify")
@click.argument("log", type=click.Path(dir_okay=False, exists=True))
@click.option("--cards", multiple=True, type=FILE,
              help="A card of a party allowed to sign entries (for holder-attested entries: the holders' cards) "
                   "or a witness; repeat. Default: PPRL_TRUST's folder of pinned cards.")
@click.option("--witness", "witnesses", multiple=True, type=FILE,
              help="A witnessed head of this log (`pprl audit witness`), or a release that carries one; repeat. "
                   "The log must extend each: not truncated, not rewritten.")
def audit_verify_cmd(log, cards, witnesses) -> None:
    """Check the log's hash chain and every entry's signature; name the first bad entry.

    A log's keeper can truncate or rewrite it (and so reset its privacy
    budget) without breaking the chain; a head another party signed shows it.

    \b
    Example:
      pprl audit verify audit.log --cards keys/authority.card.json \\
          --cards keys/regulator.card.json --witness regulator-head.json
    """
    from pprl.protocol.files import pinned_cards, verify_log

    report = verify_log(log, pinned_cards(cards, "cards", "who may sign its entries"), witnesses)
    extra = f"; extends {len(witnesses)} witnessed heads" if witnesses else ""
    click.echo(f"{log}: {report.entries} entries, chain and signatures OK (head {report.head[:16]}){extra}")


@audit_group.command("witness")
@click.argument("log", type=click.Path(dir_okay=False, exists=True))
@click.option("--me", required=True, type=FILE, help="Your identity key (a regulator, the bureau, or the keeper).")
@click.option("--keeper", required=True, type=FILE, help="The card of the party whose log this is.")
@click.option("--cards", multiple=True, type=FILE,
              help="Holders' cards, when the log has holder-attested entries; repeat.")
@click.option("--out", required=True, type=FILE, help="The signed head to write (log-head document).")
def audit_witness_cmd(log, me, keeper, cards, out) -> None:
    """Check a log and sign its head, anchoring it outside its keeper.

    Keep the head (a regulator files it; the bureau puts the authority's into
    its next release with `pprl aggregate --audit-head`): `pprl audit verify
    --witness` then refuses the log if it was later truncated or rewritten.

    \b
    Example:
      pprl audit witness authority/audit.log --me keys/regulator.key \\
          --keeper keys/authority.card.json --out regulator-head.json
    """
    from pprl.protocol.files import load_card, load_cards, load_key, witness_log

    path, head = witness_log(load_key(me), log, load_card(keeper), load_cards(cards), out)
    say(f"wrote {path}: {head.header.keeper}'s log, {head.header.entries} entries, head {head.header.head[:16]}")


@audit_group.command("report")
@click.argument("logs", nargs=-1, required=True, type=click.Path(dir_okay=False, exists=True))
@click.option("--cards", multiple=True, required=True, type=FILE,
              help="A card of a party allowed to sign entries (the authority's, the bureau's, holders'); repeat.")
@click.option("--out", required=True, type=FILE, help="The HTML page to write (self-contained: charts inline).")
def audit_report_cmd(logs, cards, out) -> None:
    """The regulator's view: one HTML page from the authority's and the bureau's logs.

    Queries per lender over time, purposes, refused queries by reason,
    consent expiries, per-platform contributions, registry updates, releases,
    and each log's chain check. The page is written even when a log does not
    verify (it says so); the command then exits 1.

    \b
    Example:
      pprl registry log --registry bureau/registry.db --out bureau.log
      pprl audit report authority/audit.log bureau.log --cards keys/authority.card.json \\
          --cards keys/bureau.card.json --out report.html
    """
    from pprl.protocol.files import audit_report, load_cards

    path, ok = audit_report(logs, load_cards(cards), out)
    say(f"wrote {path}")
    if not ok:
        raise click.ClickException(f"a log does not verify; {path} shows which and where")
