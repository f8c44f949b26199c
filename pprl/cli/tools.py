"""Commands for everyone: inspect, synth, demo."""

from __future__ import annotations

import csv
import json
import sys
from typing import Any

import click

from pprl.cli import cli, progress_wanted, say
from pprl.cli.bureau import ThresholdType


def __getattr__(name: str) -> Any:
    """``DOCUMENT_KINDS``: every kind `pprl inspect` reads, all the registered kinds (loaded on first use)."""
    if name == "DOCUMENT_KINDS":
        from pprl.documents import KINDS

        return tuple(sorted(KINDS))
    raise AttributeError(name)


@cli.command("inspect")
@click.argument("file", type=click.Path(dir_okay=False, exists=True))
@click.option("--entities", is_flag=True, help="For a linkage: print the entity table as CSV instead.")
def inspect_cmd(file, entities) -> None:
    """Print a pprl document's header (kind, version, signer, parameters, counts) as JSON.

    Secrets and payloads are never printed.

    \b
    Examples:
      pprl inspect platform_1.submission.json
      pprl inspect linkage.json --entities > entities.csv
    """
    from pprl.documents import KINDS, Linkage, load_any

    doc = load_any(file, tuple(sorted(KINDS)))
    if entities:
        if not isinstance(doc, Linkage):
            raise click.UsageError(f"--entities needs a linkage document; {file} is a {doc.KIND}")
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(["entity_id", "platform", "token", "similarity"])
        for entity in doc.payload.entities:
            for platform, token, similarity in entity.members:
                writer.writerow([entity.entity_id, platform, token, similarity])
        return
    click.echo(json.dumps(doc.public_header(), indent=2, ensure_ascii=False))


@cli.command("attack")
@click.option("--submissions", multiple=True, required=True, type=click.Path(dir_okay=False, exists=True),
              help="A submission whose CLKs to attack (yours, before going live); repeat.")
@click.option("--frequencies", type=click.Path(dir_okay=False, exists=True),
              help="A public frequency table, CSV value,frequency (e.g. M,0.49 / F,0.51), to name the groups.")
@click.option("--fail-on-leak", is_flag=True, help="Exit 1 when a field can be read from the CLKs (for CI).")
def attack_cmd(submissions, frequencies, fail_on_leak) -> None:
    """Run the bureau's pattern-mining attack on CLKs: what can be read without any key?

    A low-cardinality field hashed on its own (gender) sets the same bits in
    every record with that value; the attack finds such blocks of bits, and
    groups of blocks that never co-occur (an attribute the bureau can read).
    Check your schema with it before going live. Only the CLKs are read; the
    signature is not checked (the tool vouches for nothing).

    \b
    Example:
      pprl attack --submissions platform_1.sub.json --frequencies gender.csv --fail-on-leak
    """
    import numpy as np

    from pprl.documents import Submission, load
    from pprl.matching.attack import attack, frequencies_from_rows

    blocks = []
    for path in submissions:
        doc = load(path, Submission)
        width = doc.header.clk_bytes
        blocks.append(np.frombuffer(doc.payload.clks, dtype=np.uint8).reshape(-1, width))
    if len({b.shape[1] for b in blocks}) > 1:
        raise click.UsageError("the submissions have CLKs of different lengths (another schema)")
    table = None
    if frequencies:
        with open(frequencies, encoding="utf-8", newline="") as fh:
            rows = [(r[0], r[1]) for r in csv.reader(fh) if len(r) >= 2 and r[0] != "value"]
        table = frequencies_from_rows(rows, str(frequencies))
    report = attack(np.concatenate(blocks), frequencies=table)
    click.echo(report.render())
    if fail_on_leak and report.leaks:
        raise click.ClickException("a field can be read from these CLKs alone; harden the schema")


@cli.command("synth")
@click.option("--people", type=click.IntRange(1), default=1000, show_default=True, help="Population size.")
@click.option("--platforms", type=click.IntRange(1), default=3, show_default=True, help="Number of platforms.")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Directory for platform_<k>.csv and truth.csv.")
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed (same seed, same data).")
@click.option("--overlap", type=click.FloatRange(0, 1), default=0.6, show_default=True,
              help="About this share of people are on two or more platforms.")
@click.option("--corruption", type=click.FloatRange(0, 1), default=None,
              help="How much the platforms' copies of a person differ (typos, missing values, formats); "
                   "default 0.2, or 1.0 with --profile cn-heavy.")
@click.option("--profile", type=click.Choice(["default", "cn-heavy"]), default="default", show_default=True,
              help="cn-heavy: each platform its own script and formats (han, pinyin names, traditional "
                   "characters, in turn), with many more typos, missing fields and legacy 15-digit IDs.")
def synth_cmd(people, platforms, out, seed, overlap, corruption, profile) -> None:
    """Make a synthetic Chinese population split over platforms, with ground truth.

    \b
    Examples:
      pprl synth --people 1000 --platforms 3 --out data
      pprl synth --people 1000 --platforms 2 --profile cn-heavy --out heavy
    """
    from pprl.sim.synth import generate_population, write_population

    population = generate_population(
        people, platforms, seed=seed, overlap=overlap, corruption=corruption, progress=progress_wanted(),
        profile=profile,
    )
    for path in write_population(population, out):
        say(f"wrote {path}")


@cli.command("demo")
@click.option("--people", type=click.IntRange(2), default=10000, show_default=True, help="Population size.")
@click.option("--platforms", type=click.IntRange(2), default=3, show_default=True, help="Number of platforms.")
@click.option("--workdir", required=True, type=click.Path(file_okay=False), help="Directory to run the consortium in.")
@click.option("--bits", type=click.IntRange(2048), default=2048, show_default=True, help="Paillier modulus size.")
@click.option("--threshold", type=ThresholdType(), default="auto", show_default=True,
              help="Dice threshold for linking: 'auto' (chosen from the data) or a number.")
@click.option("--min-contributors", type=click.IntRange(1), default=2, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for the synthetic population.")
@click.option("--records-per-ciphertext", type=click.IntRange(1, 16), default=1, show_default=True,
              help="Platforms pack this many records into each ciphertext (see `pprl submit --help`).")
@click.option("--exact", is_flag=True,
              help="Run the exact-identifier path instead: ECDH PSI intersection-sum on resident IDs.")
@click.option("--lender", is_flag=True,
              help="Run the lender story instead: two months into a registry, a lender's consented queries, "
                   "refusals; leaves lender_applicants.csv and lender_scores.csv in WORKDIR.")
@click.option("--served", is_flag=True,
              help="Run the lender story through the parties' services: the bureau, a platform and the authority "
                   "each as a `pprl serve` process on a free port of 127.0.0.1, every step over signed HTTP; "
                   "stopped at the end. Implies --lender.")
def demo_cmd(people, platforms, workdir, bits, threshold, min_contributors, seed, records_per_ciphertext,
             exact, lender, served) -> None:
    """Run the whole consortium in WORKDIR through the CLI steps, and print a summary.

    Platforms, a bureau and an authority are created; platforms agree a
    linkage secret and submit; the bureau links and aggregates; the authority
    decrypts and logs. The summary gives linkage precision / recall / F1
    against the synthetic truth, and checks every decrypted aggregate against
    the plaintext sum over its linked records.

    With --exact, platforms match on the resident ID by private set
    intersection instead (`pprl psi`); the summary checks the intersection
    and every sum against the plaintext.

    With --lender, the lender story runs instead (a registry fed two months,
    a lender's consented queries, refusals); with --served, the same story
    goes through every party's service (`pprl serve` on local ports:
    uploads, registry-update jobs, pseudonyms, queries, decryptions), which
    are stopped at the end.

    \b
    Examples:
      pprl demo --people 1000 --platforms 3 --workdir demo-run
      pprl demo --records-per-ciphertext 5 --workdir demo-compact
      pprl demo --exact --people 1000 --platforms 3 --workdir demo-exact
      pprl demo --lender --people 2000 --workdir demo-lender
      pprl demo --served --people 2000 --workdir demo-served
    """
    if served:
        if exact or records_per_ciphertext != 1:
            raise click.UsageError("--served runs the lender story: no --exact, one record per ciphertext")
        from pprl.sim.served_demo import run_served_demo

        served_summary = run_served_demo(workdir, people=people, platforms=platforms, bits=bits, seed=seed,
                                         echo=say, progress=progress_wanted())
        click.echo(served_summary.render())
        if not served_summary.ok:
            raise click.ClickException("the served lender story's answers, findings, refusals or service stops "
                                       "are not what they must be")
        return
    if lender:
        if exact or records_per_ciphertext != 1:
            raise click.UsageError("--lender runs its own story: no --exact, one record per ciphertext")
        from pprl.sim.lender_demo import run_lender_demo

        lender_summary = run_lender_demo(workdir, people=people, platforms=platforms, bits=bits, seed=seed, echo=say,
                                         progress=progress_wanted())
        click.echo(lender_summary.render())
        if not lender_summary.ok:
            raise click.ClickException("the lender story's answers, findings or refusals are not what they must be")
        return
    if exact:
        if records_per_ciphertext != 1:
            raise click.UsageError("--records-per-ciphertext applies to the CLK path, not --exact")
        from pprl.sim.psi_demo import run_exact_demo

        exact_summary = run_exact_demo(
            workdir, people, platforms, seed=seed, bits=bits, min_contributors=min_contributors,
            echo=say, progress=progress_wanted(),
        )
        click.echo(exact_summary.render())
        if not exact_summary.ok:
            raise click.ClickException("the exact path's intersection or sums do not match the plaintext")
        return
    from pprl.sim.consortium import run_consortium

    summary = run_consortium(
        workdir, people=people, platforms=platforms, bits=bits, threshold=threshold,
        min_contributors=min_contributors, seed=seed, echo=say, progress=progress_wanted(),
        records_per_ciphertext=records_per_ciphertext,
    )
    click.echo(summary.render())
    if not summary.sums_match:
        raise click.ClickException("decrypted aggregates do not match the plaintext sums")
