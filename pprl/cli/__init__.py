"""The ``pprl`` command: one click group, commands split by party into sub-modules.

The CLI only parses options, calls ``pprl.protocol`` and prints. Every
``PPRLError`` becomes a one-line message and exit code 1 here, in one place;
``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import sys
from collections.abc import Iterator
from typing import Any

import click

from pprl import __version__
from pprl.errors import OptionError, PPRLError

__all__ = ["cli", "main"]


class _Group(click.Group):
    """A group that turns pprl's own errors into one-line messages."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except PPRLError as exc:
            if (ctx.find_root().obj or {}).get("debug"):
                raise
            if isinstance(exc, OptionError):  # library messages name parameters; here they are flags
                text = exc.render(lambda name: "--" + name.replace("_", "-"))
            else:
                text = str(exc)
            message = text.splitlines()[0] if text else type(exc).__name__
            raise click.ClickException(message) from None


#: The module (``pprl.cli.<module>``) that defines each top-level command or group. A command's module is
#: imported when the command runs, so ``pprl link`` starts without the others' imports; listing the
#: commands (``--help``) imports them all. tests/test_cli_lazy.py checks this table against the modules.
COMMAND_MODULES: dict[str, str] = {
    "init": "admin", "secret": "admin",
    "paillier": "authority", "decrypt": "authority", "audit": "authority",
    "link": "bureau", "aggregate": "bureau", "registry": "bureau",
    "evaluate": "evaluate",
    "pseudonym": "lender", "query": "lender", "answer": "lender", "decrypt-answer": "lender",
    "open-answer": "lender",
    "submit": "platform", "encode": "platform",
    "psi": "psi",
    "serve": "service", "status": "service",
    "inspect": "tools", "attack": "tools", "synth": "tools", "demo": "tools",
}


def load_commands() -> None:
    """Import every command module (each registers its commands on :data:`cli`)."""
    for module in dict.fromkeys(COMMAND_MODULES.values()):
        importlib.import_module(f"pprl.cli.{module}")


class _Root(_Group):
    """The ``pprl`` group: imports a command's module only when that command is asked for."""

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands:
            module = COMMAND_MODULES.get(cmd_name)
            if module is None:
                load_commands()  # a name this table lacks: whatever the modules define
            else:
                importlib.import_module(f"pprl.cli.{module}")
        return super().get_command(ctx, cmd_name)

    def list_commands(self, ctx: click.Context) -> list[str]:
        load_commands()
        return super().list_commands(ctx)

    def resolve_command(self, ctx: click.Context, args: list[str]) -> tuple[str | None, click.Command | None,
                                                                            list[str]]:
        name, command, rest = super().resolve_command(ctx, args)
        _ran.append(name or "")
        return name, command, rest


#: The top-level commands after which :func:`main` ends the process without the interpreter's teardown
#: (``os._exit`` once stdout and stderr are flushed): their outputs are written, synced and renamed into
#: place before they return, and they leave no child process or temporary file. Tearing down what
#: ``pprl link`` imported and allocated took 50-60 ms of a ~1 s command.
FAST_EXIT = frozenset({"link"})
_ran: list[str] = []


@click.group(cls=_Root, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="pprl")
@click.option("--debug", is_flag=True, help="Show tracebacks instead of one-line errors.")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """Privacy-preserving linkage and encrypted score sharing between
    platforms, a credit bureau and a key-holding authority.

    \b
    A typical run, one command per party:
      pprl init platform_1 --role platform --dir keys
      pprl secret share --me keys/platform_1.key --peers keys/platform_2.card.json --out p1.share.json
      pprl paillier keygen --me keys/authority.key --bits 2048 --dir authority
      pprl submit --me keys/platform_1.key --schema examples/schema-cn.json ...
      pprl link --me keys/bureau.key --cards ... --submissions ... --out linkage.json
      pprl aggregate --me keys/bureau.key --linkage linkage.json ... --out release.json
      pprl decrypt --me keys/authority.key --paillier-key authority/paillier.key ...
    Or see it all at once: pprl demo --workdir demo-run
    """
    ctx.obj = {"debug": debug}


def progress_wanted() -> bool:
    """Progress bars only where a person is watching."""
    return sys.stderr.isatty()


def split_columns(values: tuple[str, ...]) -> list[str]:
    """Accept ``--scores a,b`` and ``--scores a --scores b`` alike."""
    return [c.strip() for v in values for c in v.split(",") if c.strip()]


def say(message: str) -> None:
    """Status lines go to stderr so stdout stays machine-readable."""
    click.echo(message, err=True)


def engine_options(fn: Any) -> Any:
    """``--engine``, ``--scheduler`` and ``--dask-workers`` for a command whose heavy work may run on Dask."""
    fn = click.option("--dask-workers", type=click.IntRange(1), default=2, show_default=True,
                      help="With --engine dask and no --scheduler: worker processes of the cluster started on "
                           "this machine.")(fn)
    fn = click.option("--scheduler", metavar="ADDRESS",
                      help="With --engine dask: a running Dask scheduler (tcp://host:8786). Without it, a cluster "
                           "on this machine for the run.")(fn)
    fn = click.option("--engine", type=click.Choice(["local", "dask"]), default="local", show_default=True,
                      help="Where the heavy work runs: this process, or a Dask cluster (pip install 'pprl[dask]'). "
                           "The results are the same.")(fn)
    return fn


def lsh_partition_option(fn: Any) -> Any:
    """``--lsh-partition`` for a command that links on an engine (``link``, ``registry update``)."""
    return click.option(
        "--lsh-partition", type=click.Choice(["band", "bucket"]), default="band", show_default=True,
        help="With --engine dask and LSH blocking: a task per group of bands over every record (band: each "
             "worker holds every dataset's encodings, 130 bytes a record), or routed by bucket of band keys too "
             "(bucket: a worker holds only its buckets' records; slower, for datasets one worker cannot hold). "
             "The candidates are the same.")(fn)


@contextlib.contextmanager
def engine_for(engine: str, scheduler: str | None, workers: int, *, lsh_partition: str = "band") -> Iterator[Any]:
    """The engine the options chose (None: this process), closed (its local cluster stopped) at the end."""
    if engine != "dask":
        if scheduler:
            raise OptionError("{scheduler} needs --engine dask", "scheduler")
        if lsh_partition != "band":
            raise OptionError("{lsh_partition} needs --engine dask", "lsh_partition")
        yield None
        return
    from pprl.engine import DaskEngine

    with DaskEngine.start(scheduler, workers=workers, progress=progress_wanted(),
                          lsh_partition=lsh_partition) as started:
        where = f"scheduler {scheduler}" if scheduler else "a cluster on this machine"
        say(f"dask: {started.workers} workers on {where}; dashboard {started.dashboard}")
        yield started


def main() -> None:
    """Console-script entry point."""
    try:
        cli(prog_name="pprl")
    except SystemExit as done:
        if done.code in (None, 0) and _ran[-1:] and _ran[-1] in FAST_EXIT and _nothing_left_running():
            try:
                sys.stdout.flush()
                sys.stderr.flush()
            except OSError:  # a closed pipe: the interpreter's own exit reports it
                raise done from None
            os._exit(0)
        raise


def _nothing_left_running() -> bool:
    """No child process, and no Dask (its clients and clusters close in their own exit handlers)."""
    if "distributed" in sys.modules:
        return False
    mp = sys.modules.get("multiprocessing")
    return mp is None or not mp.active_children()
