"""Identity and key-ceremony commands: init, secret share / combine."""

from __future__ import annotations

import click

from pprl.cli import cli, say
from pprl.protocol.roles import ROLES


@cli.command("init")
@click.argument("name")
@click.option("--role", type=click.Choice(ROLES), required=True, help="What this party does in the consortium.")
@click.option("--dir", "directory", type=click.Path(file_okay=False), default=".", show_default=True,
              help="Where to write NAME.key (private, 0600) and NAME.card.json (public).")
def init_cmd(name: str, role: str, directory: str) -> None:
    """Create a party identity: an Ed25519 signing key and an X25519 agreement key.

    Send NAME.card.json to the other parties and read them its fingerprint over
    another channel; keep NAME.key to yourself.

    \b
    Example:
      pprl init platform_1 --role platform --dir keys
    """
    from pprl.protocol.files import init_party, load_card

    key_path, card_path = init_party(name, role, directory)
    card = load_card(card_path)
    say(f"wrote {key_path} (private, mode 0600) and {card_path}")
    click.echo(f"{name} ({role}) fingerprint {card.fingerprint}")


@cli.group("secret")
def secret_group() -> None:
    """Agree the linkage secret among the platforms (the bureau relays, cannot read)."""


@secret_group.command("share")
@click.option("--me", required=True, type=click.Path(dir_okay=False), help="Your identity key (NAME.key).")
@click.option("--peers", multiple=True, type=click.Path(dir_okay=False),
              help="Another platform's card; repeat once per platform.")
@click.option("--ceremony", help="The ceremony id all platforms agreed (32 hex digits); default: derived alike by "
                                "every platform from the participants' cards and today's UTC date.")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Share file to write.")
def share_cmd(me: str, peers: tuple[str, ...], ceremony: str | None, out: str) -> None:
    """Draw your random share of the linkage secret and wrap it for every platform.

    \b
    Example (platform_1 of three):
      pprl secret share --me keys/platform_1.key \\
          --peers keys/platform_2.card.json --peers keys/platform_3.card.json \\
          --out platform_1.share.json
    """
    from pprl.protocol.files import load_cards, load_key, share_secret

    key = load_key(me)
    path = share_secret(key, load_cards(peers), out, ceremony)
    say(f"wrote {path}: a share for {1 + len(peers)} platforms; pass it to each of them")


@secret_group.command("combine")
@click.option("--me", required=True, type=click.Path(dir_okay=False), help="Your identity key (NAME.key).")
@click.option("--shares", multiple=True, required=True, type=click.Path(dir_okay=False),
              help="A share file; repeat once per platform, your own included.")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Secret file to write (0600).")
def combine_cmd(me: str, shares: tuple[str, ...], out: str) -> None:
    """Open every platform's share and combine them into the linkage secret.

    Every platform gets the same secret; compare the printed fingerprint.

    \b
    Example:
      pprl secret combine --me keys/platform_1.key --shares platform_1.share.json \\
          --shares platform_2.share.json --shares platform_3.share.json --out platform_1.secret
    """
    from pprl.protocol.files import combine_secrets, load_key

    secret = combine_secrets(load_key(me), shares, out)
    say(f"wrote {out} (private, mode 0600); participants: {', '.join(secret.participants)}")
    click.echo(f"linkage secret fingerprint {secret.fingerprint}")
