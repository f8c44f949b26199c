"""``pprl evaluate``: measure a linkage against a known truth (synthetic data, pilots)."""

from __future__ import annotations

import click

from pprl.cli import cli, say

__all__ = ["evaluate_cmd"]

FILE = click.Path(dir_okay=False)


@cli.command("evaluate")
@click.option("--linkage", required=True, type=FILE, help="Linkage file written by `pprl link`.")
@click.option("--maps", "maps", multiple=True, required=True, metavar="[PLATFORM=]MAP",
              help="A platform's SUBMISSION.map.csv (token,<id column>); repeat once per linked platform. "
                   "The platform is inferred from the tokens unless given as PLATFORM=PATH.")
@click.option("--truth", required=True, type=FILE, help="CSV with columns platform,user_id,person (as `pprl synth` writes).")
@click.option("--plot", type=FILE, default=None,
              help="Also write a PNG: similarity histogram by truth, precision/recall against threshold.")
@click.option("--cards", multiple=True, type=FILE,
              help="The bureau's card, to check the linkage's signer against; repeat. Default: PPRL_TRUST's folder.")
@click.option("--json", "as_json", is_flag=True, help="Print the figures (and curves) as JSON instead.")
def evaluate_cmd(linkage, maps, truth, plot, cards, as_json) -> None:
    """Measure a linkage against the truth: precision, recall, F1, pair completeness, reduction ratio.

    Needs what the bureau does not have: the platforms' token maps and the
    ground truth, so it is for synthetic runs, benchmarks and pilots.

    \b
    Example:
      pprl evaluate --linkage linkage.json --maps platform_1.sub.json.map.csv \\
          --maps platform_2.sub.json.map.csv --truth data/truth.csv --cards keys/bureau.card.json \\
          --plot linkage.png
    """
    from pprl.protocol.files import pinned_cards
    from pprl.sim.evaluation import evaluate_linkage, evaluation_json

    result = evaluate_linkage(linkage, maps, truth, plot=plot,
                              cards=pinned_cards(cards, "cards", "the bureau that signed the linkage"))
    click.echo(evaluation_json(result) if as_json else result.render())
    if result.plot is not None:
        say(f"wrote {result.plot}")
