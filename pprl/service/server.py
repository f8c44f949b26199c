"""Run a party's service under uvicorn: plain HTTP/1.1 (h11) on one port, TLS and mutual TLS when asked."""

from __future__ import annotations

import logging
import signal
import ssl
from typing import Any

from pprl.service.app import Service

__all__ = ["bureau_app_from_env", "serve", "serve_bureau_workers", "uvicorn_config"]

#: The environment variable that carries a multi-process bureau's settings to its worker processes.
BUREAU_ENV = "PPRL_BUREAU_SERVICE"


def uvicorn_config(service: Service, host: str, port: int, *, tls_cert: str | None = None,
                   tls_key: str | None = None, tls_client_ca: str | None = None, log_level: str = "info") -> Any:
    """The uvicorn configuration of ``service`` (exposed for tests, which run it in a thread)."""
    import uvicorn

    options: dict[str, Any] = {}
    if tls_cert:
        options.update(ssl_certfile=tls_cert, ssl_keyfile=tls_key)
        if tls_client_ca:
            options.update(ssl_ca_certs=tls_client_ca, ssl_cert_reqs=ssl.CERT_REQUIRED)
    return uvicorn.Config(service.app(), host=host, port=port, http="h11", lifespan="on", log_level=log_level,
                          proxy_headers=False, server_header=False, timeout_keep_alive=30, **options)


def serve(service: Service, host: str, port: int, **options: Any) -> None:
    """Serve until SIGINT or SIGTERM (uvicorn finishes the requests in flight, then the service shuts down).

    A stop asked for that way ends with exit status 0: uvicorn hands the signal back once it has shut down,
    and the handlers set here turn it into a normal exit (process supervisors read anything else as a failure).
    """
    import uvicorn

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _stopped)
    uvicorn.Server(uvicorn_config(service, host, port, **options)).run()


def _stopped(signum: int, _frame: Any) -> None:
    raise SystemExit(0)


def serve_bureau_workers(me: str, registry: str, cards: list[Any], policy: str | None, host: str, port: int,
                         workers: int, *, tls_cert: str | None = None, tls_key: str | None = None,
                         tls_client_ca: str | None = None) -> None:
    """The bureau's service in ``workers`` processes sharing one port (one Python process answers on about one
    core). They share the registry: uploads and nonces live in its database, jobs hold leases, so any process
    may take any request. Each process reads ``me`` (the key file) itself; ``cards`` are the pinned cards."""
    import json
    import os

    import uvicorn

    os.environ[BUREAU_ENV] = json.dumps({"me": me, "registry": registry, "policy": policy,
                                         "cards": [c.to_signer() for c in cards]})
    options: dict[str, Any] = {}
    if tls_cert:
        options.update(ssl_certfile=tls_cert, ssl_keyfile=tls_key)
        if tls_client_ca:
            options.update(ssl_ca_certs=tls_client_ca, ssl_cert_reqs=ssl.CERT_REQUIRED)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _stopped)
    uvicorn.run("pprl.service.server:bureau_app_from_env", factory=True, host=host, port=port, workers=workers,
                http="h11", lifespan="on", proxy_headers=False, server_header=False, timeout_keep_alive=30,
                **options)


def bureau_app_from_env() -> Any:
    """One worker's application (uvicorn calls it in each worker process; see :func:`serve_bureau_workers`)."""
    import json
    import os

    from pprl.documents import Card
    from pprl.protocol.files import load_key, load_policy
    from pprl.service.bureau import BureauService

    spec = json.loads(os.environ[BUREAU_ENV])
    cards = [Card.from_signer(c, "a pinned card") for c in spec["cards"]]
    policy = load_policy(spec["policy"]) if spec.get("policy") else None
    return BureauService(load_key(spec["me"]), spec["registry"], cards, policy).app()
