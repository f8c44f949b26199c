"""``python -m pprl``: the same as the ``pprl`` command (handy where the console script is not on PATH)."""


def run() -> None:
    """Run the ``pprl`` command line."""
    from pprl.cli import main

    main()


if __name__ == "__main__":
    run()
