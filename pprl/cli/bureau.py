"""Bureau commands: link, aggregate."""

from __future__ import annotations

import click

from pprl.cli import cli, engine_for, engine_options, lsh_partition_option, progress_wanted, say

FILE = click.Path(dir_okay=False)


class ThresholdType(click.ParamType):
    """``auto`` or a number in (0, 1]."""

    name = "auto|NUMBER"

    def convert(self, value, param, ctx):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            number = float(value)
        else:
            text = str(value).strip().lower()
            if text == "auto":
                return "auto"
            try:
                number = float(text)
            except ValueError:
                self.fail(f"'{value}' is neither 'auto' nor a number", param, ctx)
        if not 0.0 < number <= 1.0:
            self.fail(f"{number} is not in (0, 1]", param, ctx)
        return number


def link_report(result) -> list[str]:
    """The lines ``pprl link`` prints: threshold, blocking figures, entity counts."""
    if result.threshold_method == "auto":
        how = "auto: where a best match is as likely a match as not, from sampled similarities"
    elif result.threshold_method == "default":
        how = f"auto fell back to the default: {result.threshold_reason}"
    else:
        how = "fixed"
    lines = [
        f"wrote {result.path}: {result.entities:,} entities from {result.linked_records:,} records",
        f"  threshold  {result.threshold:.4f} ({how})",
    ]
    if result.blocking == "lsh":
        pc = result.estimated_pair_completeness
        sample = result.sample_pair_completeness
        lines.append(
            f"  blocking   lsh, {result.bands} bands x {result.bits_per_band} bits: {result.comparisons:,} of "
            f"{result.pairs_total:,} pairs compared (reduction ratio {result.reduction_ratio:.6f})"
        )
        lines.append(
            "  completeness  estimated "
            + (f"{pc:.4f}" if pc is not None else "n/a")
            + (f", on sampled best matches {sample:.4f}" if sample is not None else "")
        )
    else:
        lines.append(f"  blocking   none ({result.blocking_reason}): all {result.pairs_total:,} pairs compared")
    lines.append(f"  candidates {result.candidate_pairs:,} pairs at or above the threshold")
    return lines


@cli.command("link")
@click.option("--me", required=True, type=FILE, help="Your identity key (bureau).")
@click.option("--cards", multiple=True, required=True, type=FILE,
              help="A platform's card; repeat once per platform. Submissions must be signed by one of them.")
@click.option("--submissions", multiple=True, required=True, type=FILE, help="A submission; repeat once per platform.")
@click.option("--threshold", type=ThresholdType(), default="auto", show_default=True,
              help="Dice similarity at or above which two records may be the same person, or 'auto' to choose "
                   "it from the similarity distribution of a sample of records (no labels needed).")
@click.option("--blocking", type=click.Choice(["auto", "lsh", "none"]), default="auto", show_default=True,
              help="Keyed LSH blocking on the encodings' bits: 'auto' uses it when it is estimated to be "
                   "faster at pair completeness 0.99, 'lsh' always, 'none' compares every pair.")
@click.option("--run", help="The run id you announced to the platforms (`pprl submit --run`): a submission made "
                           "for another run, or without one, is refused, so an old one cannot be replayed.")
@click.option("--out", required=True, type=FILE, help="Linkage file to write.")
@engine_options
@lsh_partition_option
def link_cmd(me, cards, submissions, threshold, blocking, run, out, engine, scheduler, dask_workers,
             lsh_partition) -> None:
    """Verify submissions, compare encodings (Dice) and group records into entities.

    Each entity holds at most one record per platform and at least two
    platforms, with an estimated match probability. The bureau sees only
    encodings and opaque tokens. The report on stderr gives the threshold
    (and how it was chosen), the blocking figures and the entity counts.

    \b
    Example:
      pprl link --me keys/bureau.key --cards keys/platform_1.card.json --cards keys/platform_2.card.json \\
          --submissions platform_1.submission.json --submissions platform_2.submission.json \\
          --out linkage.json
    On a Dask cluster (the same linkage): add --engine dask [--scheduler tcp://host:8786]
    [--lsh-partition bucket].
    """
    from pprl.protocol.files import link, load_cards, load_key

    with engine_for(engine, scheduler, dask_workers, lsh_partition=lsh_partition) as where:
        result = link(
            load_key(me), load_cards(cards), submissions, threshold, out, blocking=blocking,
            progress=progress_wanted(), run=run, engine=where,
        )
    for line in link_report(result):
        say(line)


@cli.command("aggregate")
@click.option("--me", required=True, type=FILE, help="Your identity key (bureau).")
@click.option("--linkage", required=True, type=FILE, help="Linkage file written by `pprl link`.")
@click.option("--submissions", multiple=True, required=True, type=FILE, help="A submission; repeat once per platform.")
@click.option("--cards", multiple=True, type=FILE,
              help="A platform's card; repeat once per platform. Submissions must be signed by one of them. "
                   "Default: PPRL_TRUST's folder of pinned cards.")
@click.option("--min-contributors", type=click.IntRange(1), default=2, show_default=True,
              help="Release an entity only if at least this many platforms contributed to it.")
@click.option("--noise", type=click.Choice(["laplace", "gaussian"]),
              help="Add differentially private integer noise to each released sum under encryption "
                   "(needs every submission made with the same --clip ranges).")
@click.option("--epsilon", type=float, help="With --noise: privacy parameter epsilon per score column.")
@click.option("--delta", type=float, help="With --noise gaussian: privacy parameter delta.")
@click.option("--audit-head", type=FILE,
              help="The decryptor's audit-log head as witnessed (`pprl audit witness`), signed by a party among "
                   "--cards: the release carries it, and the decryptor refuses it unless its log extends it.")
@click.option("--out", required=True, type=FILE, help="Release file to write (ciphertexts only).")
@click.option("--format", "format_", type=click.Choice(["json", "chunked"]), default="json", show_default=True,
              help="json: one signed JSON document. chunked: the per-entity columns as binary chunks, each listed "
                   "by its SHA-256 in a signed trailer (for 100k+ entities; `pprl decrypt` reads both).")
@engine_options
def aggregate_cmd(me, linkage, submissions, cards, min_contributors, noise, epsilon, delta, audit_head, out, format_,
                  engine, scheduler, dask_workers) -> None:
    """Sum every score column per entity under encryption, for the authority to decrypt.

    With --noise laplace --epsilon E (or --noise gaussian --epsilon E --delta D)
    the bureau adds discrete Laplace (scale sensitivity/E) or discrete
    Gaussian (classic bound) noise to every released sum, calibrated to the
    submissions' declared clip ranges; the parameters go in the signed
    release header.

    Submissions made with `pprl submit --records-per-ciphertext N` need no
    flag here: each record is aligned onto the packing's target slots and
    every released sum gets fresh masks (more work for the bureau than one
    record per ciphertext; the release says how the sums are packed).

    \b
    Example:
      pprl aggregate --me keys/bureau.key --linkage linkage.json \\
          --submissions platform_1.submission.json --submissions platform_2.submission.json \\
          --cards keys/platform_1.card.json --cards keys/platform_2.card.json \\
          --min-contributors 2 --noise laplace --epsilon 1.0 --out release.json
    """
    from pprl.protocol.files import aggregate, load_key, pinned_cards

    with engine_for(engine, scheduler, dask_workers) as where:
        result = aggregate(
            load_key(me), linkage, submissions, min_contributors, out,
            cards=pinned_cards(cards, "cards", "the platforms that signed the submissions"),
            noise=noise, epsilon=epsilon, delta=delta, progress=progress_wanted(), audit_head=audit_head,
            engine=where, format=format_,
        )
    say(f"wrote {result.path}: {result.released} entities released, {result.suppressed} held back (< {min_contributors} platforms)")


REGISTRY = click.option(
    "--registry", required=True, metavar="PATH|URL",
    help="The registry: a SQLite file (created if absent) or a PostgreSQL URL (postgresql://user@host/db).",
)


@cli.group("registry")
def registry_group() -> None:
    """The bureau's persistent registry of linked entities (stable ids across monthly submissions)."""


@registry_group.command("update")
@click.option("--me", required=True, type=FILE, help="Your identity key (bureau).")
@click.option("--registry", metavar="PATH|URL",
              help="The registry: a SQLite file (created if absent) or a PostgreSQL URL (postgresql://user@host/db).")
@click.option("--cards", multiple=True, type=FILE,
              help="A platform's card; repeat once per platform. Submissions must be signed by one of them.")
@click.option("--submissions", multiple=True, type=FILE,
              help="A platform's new submission (its monthly snapshot); repeat. Applied in the order given. With "
                   "--service: the hash of a submission the service received (default: all not yet applied).")
@click.option("--service", "service_url", metavar="URL",
              help="Run the update as a job of your bureau service instead (it holds the registry and the pins), "
                   "and follow its progress.")
@click.option("--service-card", "service_cards", multiple=True, type=FILE,
              help="With --service: your service's card (default: your trust store, PPRL_TRUST).")
@click.option("--threshold", type=ThresholdType(), default="auto", show_default=True,
              help="Dice similarity at or above which a record joins an entity, or 'auto' (chosen from the data).")
@click.option("--blocking", type=click.Choice(["auto", "lsh", "none"]), default="auto", show_default=True,
              help="Keyed LSH blocking, as for `pprl link`.")
@engine_options
@lsh_partition_option
def registry_update_cmd(me, registry, cards, submissions, service_url, service_cards, threshold, blocking, engine,
                        scheduler, dask_workers, lsh_partition) -> None:
    """Link platforms' new submissions into the registry; each replaces its platform's previous one.

    A record keeps its entity when its previous self is found, joins the
    entity of its best match on another platform otherwise, or starts a new
    entity; the platform's records that are gone no longer count, and an
    entity left with none is removed. All the submissions go in one
    transaction: if one is refused, nothing changes.

    \b
    Example:
      pprl registry update --me keys/bureau.key --registry bureau/registry.db \\
          --cards keys/platform_1.card.json --cards keys/platform_2.card.json \\
          --submissions platform_1.2026-11.sub.json --submissions platform_2.2026-11.sub.json
    Through the bureau's service (every submission it received and has not applied yet):
      pprl registry update --me keys/bureau.key --service http://127.0.0.1:8400 \
          --service-card keys/bureau.card.json
    """
    from pprl.documents import Submission, load
    from pprl.errors import KeyFormatError
    from pprl.protocol.files import load_cards, load_key
    from pprl.protocol.link import LinkOptions
    from pprl.registry import Registry

    key = load_key(me)
    if key.role != "bureau":
        raise KeyFormatError(f"{me}: only the bureau keeps the registry; '{key.name}' is a {key.role}")
    if service_url:
        if registry or cards:
            raise click.UsageError("with --service the service holds the registry and the pins: leave out "
                                   "--registry and --cards")
        _update_through_service(service_url, key, service_cards, list(submissions), threshold)
        return
    for name, value in (("--registry", registry), ("--cards", cards), ("--submissions", submissions)):
        if not value:
            raise click.UsageError(f"Missing option '{name}' (or run the update through --service URL)")
    trusted = load_cards(cards)
    docs = [load(p, Submission) for p in submissions]
    with engine_for(engine, scheduler, dask_workers, lsh_partition=lsh_partition) as where, \
            Registry(registry) as reg:
        options = LinkOptions(threshold=None if threshold == "auto" else threshold, blocking=blocking,
                              progress=progress_wanted(), engine=where)
        reports = reg.update(docs, options, trusted, me=key)
        stats = reg.stats()
    for r in reports:
        how = ("nothing to link against yet" if r.threshold_method == "none"
               else f"threshold {r.threshold:.4f}, {r.threshold_method}")
        say(f"{r.platform}: {r.records:,} records: {r.new:,} new, {r.updated:,} updated, {r.removed:,} removed, "
            f"{r.unchanged:,} unchanged entities ({how})")
    click.echo(
        f"new {sum(r.new for r in reports)} updated {sum(r.updated for r in reports)} "
        f"removed {sum(r.removed for r in reports)} unchanged {reports[-1].unchanged if reports else 0} "
        f"entities {stats.entities}"
    )


def _update_through_service(url: str, key, service_cards, submissions: list[str], threshold) -> None:
    import json

    from pprl.cli.service import connect
    from pprl.errors import PPRLError

    spec: dict = {"kind": "registry-update", "threshold": "auto" if threshold == "auto" else float(threshold)}
    if submissions:
        spec["submissions"] = submissions
    shown: list[str] = []

    def show(state: dict) -> None:
        p = state.get("progress")
        line = (f"job {state['job']}: running, submission {p['done'] + 1} of {p['total']} ({p.get('platform')})"
                if state["status"] == "running" and p else f"job {state['job']}: {state['status']}")
        if not shown or shown[-1] != line:
            say(line)
            shown.append(line)

    with connect(url, key, service_cards, "bureau") as client:
        job = client.call("POST", "/v1/jobs", spec, idempotent=False)
        state = client.wait(job["job"], progress=show)
    if state["status"] == "failed":
        raise PPRLError(f"job {state['job']} failed: {state.get('error')}")
    for r in state["result"]["updates"]:
        say(f"{r['platform']}: {r['records']:,} records: {r['new']:,} new, {r['updated']:,} updated, "
            f"{r['removed']:,} removed, {r['unchanged']:,} unchanged entities")
    click.echo(json.dumps(state["result"], ensure_ascii=False))


@registry_group.command("stats")
@REGISTRY
@click.option("--json", "as_json", is_flag=True, help="Print the figures as JSON.")
def registry_stats_cmd(registry, as_json) -> None:
    """Print what the registry holds: entities, records per platform, entities by number of platforms.

    \b
    Example:
      pprl registry stats --registry bureau/registry.db
    """
    import json

    from pprl.registry import Registry

    with Registry(registry) as reg:
        stats = reg.stats()
    if as_json:
        click.echo(json.dumps({
            "entities": stats.entities, "records": stats.records,
            "by_platforms": {str(k): v for k, v in stats.by_platforms.items()},
            "submissions": stats.submissions, "updates": stats.updates,
        }, indent=2))
        return
    click.echo(f"entities {stats.entities}")
    for platform, n in stats.records.items():
        sub = stats.submissions.get(platform, {})
        click.echo(f"  {platform}: {n} records (submission {str(sub.get('hash', ''))[:16]}, {sub.get('created', '')})")
    for k, n in stats.by_platforms.items():
        click.echo(f"  on {k} platform{'s' if k != 1 else ''}: {n} entities")


@registry_group.command("log")
@REGISTRY
@click.option("--out", required=True, type=FILE, help="Where to write the log (JSON lines), e.g. for the regulator.")
def registry_log_cmd(registry, out) -> None:
    """Export the bureau's audit log: every registry update and query (answered or refused), signed, chained.

    Check it with `pprl audit verify OUT --cards BUREAU_CARD`.

    \b
    Example:
      pprl registry log --registry bureau/registry.db --out bureau.log
    """
    import json

    from pprl.documents import write_atomic
    from pprl.protocol.audit import check_chain
    from pprl.registry import Registry

    with Registry(registry) as reg:
        entries = reg.log()
    check_chain(entries, source=str(registry))
    text = "".join(json.dumps(e, sort_keys=True, ensure_ascii=False) + "\n" for e in entries)
    write_atomic(out, text.encode("utf-8"))
    say(f"wrote {out}: {len(entries)} entries")
