"""``pprl psi ...``: the exact-identifier path (ECDH private set intersection-sum), one command per party step."""

from __future__ import annotations

import json

import click

from pprl.cli import cli, engine_for, engine_options, progress_wanted, say, split_columns
from pprl.encoding.normalise import IDENTIFIER_KINDS

__all__ = ["psi_group"]

FILE = click.Path(dir_okay=False)
KINDS = click.Choice(list(IDENTIFIER_KINDS))
WORKERS = click.option("--workers", type=click.IntRange(1), default=None,
                       help="Threads/processes to use (default: every CPU).")


@cli.group("psi")
def psi_group() -> None:
    """Exact matching on one identifier (resident ID or mobile) by ECDH private set intersection.

    No linkage secret and no Bloom filters: each platform blinds its
    normalised identifiers with a fresh session key, every other platform
    adds its key in turn (the bureau relays the files round a ring), and the
    bureau matches the fully blinded lists and sums the Paillier-encrypted
    scores per matched person. The release decrypts with `pprl decrypt`.

    \b
    Example, two platforms (p1, p2) and one bureau:
      pprl psi init --me keys/bureau.key --cards keys/p1.card.json --cards keys/p2.card.json \\
          --identifier resident_id --out session.json                                   # bureau
      pprl psi blind --me keys/p1.key --session session.json --data p1.csv --id-column user_id \\
          --scores repay_score,spend_score,travel_score --paillier authority/paillier.pub.json \\
          --out p1.r0.json --state p1.state                                             # p1 (p2 likewise)
      pprl psi route --session session.json                                             # who re-blinds what
      pprl psi reblind --me keys/p2.key --state p2.state --input p1.r0.json --out p1.r1.json   # p2
      pprl psi reblind --me keys/p1.key --state p1.state --input p2.r0.json --out p2.r1.json   # p1
      pprl psi aggregate --me keys/bureau.key --session session.json \\
          --inputs p1.r1.json --inputs p2.r1.json --min-contributors 2 --out release.json  # bureau
      pprl decrypt --me keys/authority.key --paillier-key authority/paillier.key --release release.json \\
          --cards keys/bureau.card.json --audit-log audit.log --out aggregates.csv        # authority
    """


@psi_group.command("init")
@click.option("--me", required=True, type=FILE, help="Your identity key (bureau).")
@click.option("--cards", multiple=True, required=True, type=FILE,
              help="A platform's card; repeat once per platform. Their order is the ring order.")
@click.option("--identifier", type=KINDS, default="resident_id", show_default=True,
              help="The identifier every platform matches on.")
@click.option("--reveal-intersection", is_flag=True,
              help="Let each platform learn which of its own users were released (see `pprl psi reveal`).")
@click.option("--out", required=True, type=FILE, help="Session file to write (give it to every platform).")
def init_cmd(me, cards, identifier, reveal_intersection, out) -> None:
    """Open a PSI session (bureau): a fresh session id, the platforms in ring order, the identifier.

    \b
    Example:
      pprl psi init --me keys/bureau.key --cards keys/platform_1.card.json \\
          --cards keys/platform_2.card.json --cards keys/platform_3.card.json \\
          --identifier resident_id --out session.json
    """
    from pprl.protocol.files import init_session, load_cards, load_key

    result = init_session(load_key(me), load_cards(cards), out, identifier=identifier,
                          reveal_intersection=reveal_intersection)
    say(f"wrote {result.path}: session {result.session_id} for {', '.join(result.platforms)} on {identifier}")


@psi_group.command("blind")
@click.option("--me", required=True, type=FILE, help="Your identity key (platform).")
@click.option("--session", required=True, type=FILE, help="Session file from the bureau (`pprl psi init`).")
@click.option("--bureau", type=FILE, help="The bureau's card: pin who must have signed the session.")
@click.option("--peers", multiple=True, type=FILE,
              help="Another platform's card; repeat. Every platform the session lists must be pinned (so the "
                   "bureau cannot add one of its own). With --bureau, --authority and --peers unset, PPRL_TRUST's "
                   "folder of pinned cards is used.")
@click.option("--data", required=True, type=FILE, help="Your users, a UTF-8 CSV with a header row.")
@click.option("--id-column", required=True, help="Your own user id column (kept only in the state file).")
@click.option("--identifier", type=KINDS, help="Identifier kind; must be the session's (default: the session's).")
@click.option("--identifier-column", help="Column holding the identifier (default: named like the kind).")
@click.option("--scores", multiple=True, help="Score column(s) to encrypt: COL[,COL...]; omit for a count only.")
@click.option("--paillier", type=FILE, help="The authority's paillier.pub.json (needed with --scores).")
@click.option("--authority", type=FILE, help="The authority's card: pin who must have signed --paillier.")
@click.option("--out", required=True, type=FILE, help="Round file to write (goes to the bureau).")
@click.option("--state", required=True, type=FILE,
              help="Private state to write (mode 0600, holds your session key): keep it for `reblind`.")
@click.option("--clip", multiple=True, metavar="COL=LO:HI",
              help="Clip score column COL to [LO, HI] before encryption and declare the range in the signed "
                   "round (needed for release noise); repeat once per column.")
@click.option("--plain-encryption", is_flag=True,
              help="Encrypt with classic phe-style r^n randomness instead of the key's DJN base "
                   "(about 10x slower; for a platform that will not rely on the key holder's DJN base).")
@WORKERS
@engine_options
def blind_cmd(me, session, bureau, peers, data, id_column, identifier, identifier_column, scores, paillier, authority,
              out, state, clip, plain_encryption, workers, engine, scheduler, dask_workers) -> None:
    """Round 1 (platform): normalise, hash and blind your identifiers, encrypt your scores, sign.

    Rows with a missing or invalid identifier are left out (counted, never
    shown); two rows with the same identifier are refused.

    \b
    Example:
      pprl psi blind --me keys/platform_1.key --session session.json --bureau keys/bureau.card.json \\
          --peers keys/platform_2.card.json --peers keys/platform_3.card.json \\
          --data platform_1.csv --id-column user_id --identifier resident_id \\
          --scores repay_score,spend_score,travel_score --paillier authority/paillier.pub.json \\
          --authority keys/authority.card.json --out platform_1.r0.json --state platform_1.psi-state
    """
    from pprl.cli.platform import parse_clip
    from pprl.protocol.files import blind_identifiers, load_key, load_session, pinned_cards

    key = load_key(me)
    bureaus = pinned_cards([bureau] if bureau else [], "bureau", "who signed the session")
    platforms = pinned_cards(peers, "peers", "the session's other platforms")
    pins = pinned_cards([authority] if authority else [], "authority", "who signed --paillier") if paillier else None
    with engine_for(engine, scheduler, dask_workers) as where:
        result = blind_identifiers(
            key, load_session(session, bureaus, [key.card, *platforms]), data, id_column, out, state,
            identifier=identifier, identifier_column=identifier_column, paillier=paillier,
            scores=split_columns(scores), authority=pins, workers=workers, progress=progress_wanted(),
            encryption="plain" if plain_encryption else None, clip=parse_clip(clip), engine=where,
        )
    say(f"wrote {result.path} ({result.records} blinded identifiers, {result.skipped} rows without a valid one left out; "
        f"scores: {', '.join(result.score_columns) or 'none'})")
    say(f"wrote {result.state_path} (private, mode 0600: keep it for reblind)")


@psi_group.command("reblind")
@click.option("--me", required=True, type=FILE, help="Your identity key (platform).")
@click.option("--state", required=True, type=FILE, help="Your state file from `pprl psi blind`.")
@click.option("--input", "input_", required=True, type=FILE, help="Another platform's round file (relayed by the bureau).")
@click.option("--out", required=True, type=FILE, help="Round file to write (back to the bureau).")
@click.option("--rerandomize/--no-rerandomize", default=True, show_default=True,
              help="Refresh the ciphertexts' randomness (one Paillier exponentiation per score), so the bureau "
                   "cannot follow an element through the ring by its bytes. Turn off only for a trusted relay.")
@WORKERS
@engine_options
def reblind_cmd(me, state, input_, out, rerandomize, workers, engine, scheduler, dask_workers) -> None:
    """One hop (platform): add your key to another platform's list, reshuffle, sign. Once per other platform.

    Refused unless the list is from this session, is not your own, and you
    are its next hop (`pprl psi route` prints the order).

    \b
    Example:
      pprl psi reblind --me keys/platform_2.key --state platform_2.psi-state \\
          --input platform_1.r0.json --out platform_1.r1.json
    """
    from pprl.protocol.files import load_key, reblind_round

    with engine_for(engine, scheduler, dask_workers) as where:
        result = reblind_round(load_key(me), state, input_, out, rerandomize=rerandomize, workers=workers,
                               progress=progress_wanted(), engine=where)
    where = "complete: give it to the bureau's aggregate" if result.complete else "next hop follows"
    say(f"wrote {result.path}: {result.origin}'s list, {result.records} elements, "
        f"blinded by {', '.join(result.hops)} ({where})")


@psi_group.command("route")
@click.option("--session", required=True, type=FILE, help="Session file.")
@click.option("--bureau", type=FILE,
              help="The bureau's card: pin who must have signed the session (or PPRL_TRUST's folder).")
def route_cmd(session, bureau) -> None:
    """Print the ring schedule: at each step, which platform re-blinds whose list (CSV on stdout).

    \b
    Example:
      pprl psi route --session session.json --bureau keys/bureau.card.json
    """
    from pprl.documents import Card, PsiSession, load
    from pprl.protocol.files import pinned_cards
    from pprl.protocol.psi import check_session, reblind_schedule

    doc = load(session, PsiSession)
    listed = [Card.from_signer(p) for p in doc.header.platforms]  # only printed: the bureau's signature is pinned
    sess = check_session(doc, pinned_cards([bureau] if bureau else [], "bureau", "who signed the session"), listed)
    click.echo("step,platform,list_of")
    for step, pairs in enumerate(reblind_schedule(sess), start=1):
        for platform, origin in pairs:
            click.echo(f"{step},{platform},{origin}")


@psi_group.command("aggregate")
@click.option("--me", required=True, type=FILE, help="Your identity key (bureau; the session's opener).")
@click.option("--session", required=True, type=FILE, help="The session file you opened.")
@click.option("--inputs", multiple=True, required=True, type=FILE,
              help="A fully blinded round file; repeat once per platform.")
@click.option("--min-contributors", type=click.IntRange(1), default=2, show_default=True,
              help="Release a person only if at least this many platforms hold them "
                   "(persons on one platform only are never released).")
@click.option("--out", required=True, type=FILE, help="Release file to write (decrypt it with `pprl decrypt`).")
@click.option("--reveal-dir", type=click.Path(file_okay=False),
              help="With a revealing session: where to write <platform>.reveal.json (default: next to --out).")
@click.option("--noise", type=click.Choice(["laplace", "gaussian"]),
              help="Add differentially private integer noise to each released sum under encryption (needs every "
                   "list blinded with the same --clip ranges); the same session's lists draw the same noise.")
@click.option("--epsilon", type=float, help="With --noise: privacy parameter epsilon per score column.")
@click.option("--delta", type=float, help="With --noise gaussian: privacy parameter delta.")
@engine_options
def aggregate_cmd(me, session, inputs, min_contributors, out, reveal_dir, noise, epsilon, delta, engine, scheduler,
                  dask_workers) -> None:
    """Match the fully blinded lists (bureau) and sum each score column per matched person, encrypted.

    The release has the same format as `pprl aggregate`'s, so the authority
    decrypts and audit-logs it with `pprl decrypt`.

    \b
    Example:
      pprl psi aggregate --me keys/bureau.key --session session.json \\
          --inputs platform_1.r2.json --inputs platform_2.r2.json --inputs platform_3.r2.json \\
          --min-contributors 2 --out release.json
    """
    from pprl.protocol.files import aggregate_intersection, load_key

    with engine_for(engine, scheduler, dask_workers) as where:
        result = aggregate_intersection(load_key(me), session, inputs, min_contributors, out,
                                        reveal_dir=reveal_dir, noise=noise, epsilon=epsilon, delta=delta,
                                        engine=where)
    say(f"wrote {result.path}: {result.intersection} persons on 2+ platforms, {result.released} released, "
        f"{result.suppressed} held back (< {min_contributors} platforms)")
    for path in result.reveal_paths:
        say(f"wrote {path}")


@psi_group.command("count")
@click.option("--me", required=True, type=FILE, help="Your identity key (bureau; the session's opener).")
@click.option("--session", required=True, type=FILE, help="The session file you opened.")
@click.option("--inputs", multiple=True, required=True, type=FILE,
              help="A fully blinded round file; repeat once per platform.")
@engine_options
def count_cmd(me, session, inputs, engine, scheduler, dask_workers) -> None:
    """Print the intersection's size (bureau), as JSON: list sizes, persons on 2+ platforms, by count.

    \b
    Example:
      pprl psi count --me keys/bureau.key --session session.json \\
          --inputs platform_1.r1.json --inputs platform_2.r1.json
    """
    from pprl.protocol.files import count_intersection, load_key

    with engine_for(engine, scheduler, dask_workers) as where:
        counts = count_intersection(load_key(me), session, inputs, engine=where)
    click.echo(json.dumps({
        "records": counts.records,
        "intersection": counts.intersection,
        "by_contributors": {str(k): v for k, v in counts.by_contributors.items()},
    }, indent=2))


@psi_group.command("reveal")
@click.option("--me", required=True, type=FILE, help="Your identity key (platform).")
@click.option("--state", required=True, type=FILE, help="Your state file from `pprl psi blind`.")
@click.option("--input", "input_", required=True, type=FILE, help="Your <platform>.reveal.json from the bureau.")
@click.option("--out", required=True, type=FILE, help="CSV to write (mode 0600): <id column>,entity_id,contributors.")
def reveal_cmd(me, state, input_, out) -> None:
    """Map the bureau's reveal back to your own users (platform; revealing sessions only).

    Join the result with the authority's aggregates.csv on entity_id.

    \b
    Example:
      pprl psi reveal --me keys/platform_1.key --state platform_1.psi-state \\
          --input platform_1.reveal.json --out platform_1.members.csv
    """
    from pprl.protocol.files import load_key, reveal_members

    result = reveal_members(load_key(me), state, input_, out)
    say(f"wrote {result.path} ({result.members} of your users released; private, mode 0600)")

