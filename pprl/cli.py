"""The ``pprl`` command: one click group, one sub-module per party's commands."""

from __future__ import annotations

import click

from pprl import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="pprl")
def cli() -> None:
    """Privacy-preserving linkage and encrypted score sharing between platforms,
    a credit bureau and a key-holding authority."""


def main() -> None:
    """Console-script entry point."""
    cli()
