"""Services over the network: pprl serve (any party) and pprl status (a job's progress)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import click

from pprl.cli import cli, say

FILE = click.Path(dir_okay=False)

SERVICE_CARD = click.option(
    "--service-card", "service_cards", multiple=True, type=FILE,
    help="The card of the service you talk to (checked against what it says it is); repeat for several. "
         "Default: your trust store (PPRL_TRUST).")


def connect(url: str, me: Any, service_cards: Sequence[str], role: str) -> Any:
    """A signed client for the service at ``url``, which must be one of the pinned cards with ``role``."""
    from pprl.protocol.files import pinned_cards
    from pprl.service.client import Client

    pinned = pinned_cards(service_cards, "service_card", f"the {role}'s service")
    return Client(url, me, pinned, role)


@cli.command("serve")
@click.option("--me", required=True, type=FILE,
              help="Your identity key; its role picks the service (bureau, platform, authority / key holder).")
@click.option("--cards", multiple=True, type=FILE,
              help="A card of a party that may call you (platforms and lenders; for the bureau's operators, "
                   "bureau cards; for a key holder, also the bureau's and the dealer's); repeat. "
                   "Default: your trust store (PPRL_TRUST).")
@click.option("--registry", metavar="PATH|URL", help="Bureau: the registry (SQLite file or PostgreSQL URL); "
              "the service keeps its uploads, jobs and nonces there too.")
@click.option("--policy", type=FILE, help="Bureau: the release policy for answers; key holder: your own policy "
              "(answers releasing more are refused).")
@click.option("--secret", type=FILE, help="Platform: your linkage secret (the pseudonym key is derived from it).")
@click.option("--log", "log_path", type=FILE, help="Platform: the log of pseudonym requests evaluated.")
@click.option("--daily-quota", type=click.IntRange(0), default=10_000, show_default=True,
              help="Platform: most applicants one lender may have evaluated per UTC day.")
@click.option("--per-minute", type=click.IntRange(1), default=600, show_default=True,
              help="Platform: most requests one lender may send per minute (429 beyond).")
@click.option("--paillier-key", type=FILE, help="Authority: the whole Paillier private key.")
@click.option("--share", type=FILE, help="Threshold key holder: your share of the key.")
@click.option("--audit-log", type=FILE, help="Authority / key holder: the audit log every decryption goes into first.")
@click.option("--state", type=FILE, help="Platform / key holder: SQLite file for nonces and uploads "
              "(default: next to the log, <log>.state.db).")
@click.option("--workers", type=click.IntRange(1, 64), default=1, show_default=True,
              help="Bureau: serve from this many processes on the one port (a process answers on about one core; "
                   "they share the registry, its uploads and its jobs).")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=click.IntRange(1, 65535), default=8400, show_default=True, help="Port to listen on.")
@click.option("--tls-cert", type=FILE, help="Serve HTTPS with this certificate (PEM) ...")
@click.option("--tls-key", type=FILE, help="... and its private key (PEM).")
@click.option("--tls-client-ca", type=FILE, help="With --tls-cert: require client certificates signed by this CA "
              "(mutual TLS).")
def serve_cmd(me, cards, registry, policy, secret, log_path, daily_quota, per_minute, paillier_key, share, audit_log,
              state, workers, host, port, tls_cert, tls_key, tls_client_ca) -> None:
    """Serve your party's steps over HTTP: signed requests in, signed documents out.

    \b
    The bureau (submissions, registry updates as jobs, lender queries):
      pprl serve --me keys/bureau.key --registry bureau/registry.db --cards keys/platform_1.card.json \\
          --cards keys/platform_2.card.json --cards keys/bank_a.card.json --policy bureau/policy.json --port 8400
    A platform (pseudonyms for registered lenders):
      pprl serve --me keys/platform_1.key --secret platform_1/linkage.secret --log platform_1/oprf.log \\
          --cards keys/bank_a.card.json --port 8401
    The authority (decrypts answers for their lenders, after its own checks):
      pprl serve --me keys/authority.key --paillier-key authority/paillier.key --audit-log authority/audit.log \\
          --cards keys/bureau.card.json --cards keys/bank_a.card.json --port 8402

    Every request must be signed by one of --cards (pprl's own commands do
    it: `pprl submit --to URL`, `pprl query --bureau URL`, ...); replays,
    stale or oversized requests (over 2 MB: larger documents are uploaded
    in chunks) get a 4xx with a one-line JSON error. Stop with Ctrl-C or
    SIGTERM; the requests in flight finish first, and a registry update cut
    short by a crash runs again at the next start.
    """
    from pprl.errors import KeyFormatError
    from pprl.protocol.files import load_key, load_policy, pinned_cards
    from pprl.service.server import serve

    key = load_key(me)
    trusted = pinned_cards(cards, "cards", "who may call your service")
    if bool(tls_key) != bool(tls_cert) or (tls_client_ca and not tls_cert):
        raise click.UsageError("--tls-cert and --tls-key go together (and --tls-client-ca needs them)")
    service: Any
    if key.role == "bureau":
        from pprl.service.bureau import BureauService

        if not registry:
            raise click.UsageError("the bureau serves its registry: give --registry")
        if workers > 1:
            from pprl.service.server import serve_bureau_workers

            if policy:
                load_policy(policy)  # a bad policy fails here, once, not in every worker
            say(f"pprl bureau service '{key.name}' ({key.card.fingerprint}) on "
                f"{'https' if tls_cert else 'http'}://{host}:{port}, {workers} processes")
            serve_bureau_workers(str(me), str(registry), trusted, policy, host, port, workers, tls_cert=tls_cert,
                                 tls_key=tls_key, tls_client_ca=tls_client_ca)
            return
        service = BureauService(key, registry, trusted, load_policy(policy) if policy else None)
    elif key.role == "platform":
        from pprl.protocol.files import load_secret
        from pprl.service.parties import PlatformService

        if not secret or not log_path:
            raise click.UsageError("a platform serves pseudonyms: give --secret and --log")
        service = PlatformService(key, load_secret(secret), trusted, log_path,
                                  state or f"{log_path}.state.db", daily_quota=daily_quota, per_minute=per_minute)
    elif key.role == "authority":
        from pprl.protocol.files import load_paillier_private, load_share
        from pprl.service.parties import HolderService

        if bool(paillier_key) == bool(share) or not audit_log:
            raise click.UsageError("a key holder gives --audit-log and one of --paillier-key (whole key) or --share")
        kwargs: dict[str, Any] = {"policy": load_policy(policy) if policy else None}
        if paillier_key:
            kwargs["private"] = load_paillier_private(paillier_key)
        else:
            dealers = [c for c in trusted if c.role == "authority" and c.fingerprint != key.card.fingerprint]
            if len(dealers) != 1:
                raise click.UsageError("give the dealer's card (the authority that dealt the key) once in --cards")
            kwargs["share"] = load_share(key, share, dealer=dealers[0])
        service = HolderService(key, trusted, audit_log, state or f"{audit_log}.state.db", **kwargs)
    else:
        raise KeyFormatError(f"{me}: a {key.role} calls services but serves none")
    if workers > 1:
        raise click.UsageError("--workers is for the bureau (a platform's and a key holder's logs take one writer)")
    scheme = "https" if tls_cert else "http"
    say(f"pprl {key.role} service '{key.name}' ({key.card.fingerprint}) on {scheme}://{host}:{port}")
    serve(service, host, port, tls_cert=tls_cert, tls_key=tls_key, tls_client_ca=tls_client_ca)


@cli.command("status")
@click.argument("url")
@click.argument("job")
@click.option("--me", required=True, type=FILE, help="Your identity key (the bureau, or a platform whose "
              "submission the job applies).")
@SERVICE_CARD
@click.option("--wait", is_flag=True, help="Poll until the job is done or failed, showing its progress.")
def status_cmd(url, job, me, service_cards, wait) -> None:
    """Show a job of the bureau's service (JSON on stdout): queued, running (with progress), done or failed.

    \b
    Example:
      pprl status http://bureau.example:8400 3f2a9c0d1e4b5a67 --me keys/bureau.key \\
          --service-card keys/bureau.card.json --wait
    Exits 1 when the job failed (its error is printed).
    """
    from pprl.errors import PPRLError
    from pprl.protocol.files import load_key

    def show(state: dict) -> None:
        p = state.get("progress")
        if state["status"] == "running" and p:
            what = f", {p['stage']}" if p.get("stage") else ""
            say(f"job {job}: running, submission {p['done'] + 1} of {p['total']} ({p.get('platform')}){what}")
        else:
            say(f"job {job}: {state['status']}")

    with connect(url, load_key(me), service_cards, "bureau") as client:
        state = client.wait(job, progress=show) if wait else client.job(job)
    click.echo(json.dumps(state, indent=1, ensure_ascii=False))
    if state["status"] == "failed":
        raise PPRLError(f"job {job} failed: {state.get('error')}")
