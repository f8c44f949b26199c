"""Shim so ``python cli.py ...`` works from a checkout, as ``pprl ...`` does when installed."""

from pprl.cli import main

if __name__ == "__main__":
    main()
