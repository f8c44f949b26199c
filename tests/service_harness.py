"""Running a party's service for the tests: uvicorn on 127.0.0.1 in a thread (or a `pprl serve` process)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def _running(config, tls: bool) -> Iterator[str]:
    """Run a uvicorn ``config`` (on a free port of 127.0.0.1) in a thread until the block ends; yields its URL."""
    import uvicorn

    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the server did not start")
        time.sleep(0.02)
    try:
        yield f"{'https' if tls else 'http'}://127.0.0.1:{config.port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


@contextmanager
def served(service, **options) -> Iterator[str]:
    """Serve ``service`` on a free port of 127.0.0.1 until the block ends; yields its URL."""
    from pprl.service.server import uvicorn_config

    config = uvicorn_config(service, "127.0.0.1", free_port(), log_level="warning", **options)
    with _running(config, bool(options.get("tls_cert"))) as url:
        yield url


class Process:
    """`pprl serve ARGS` as a child process (so a test can kill -9 it)."""

    def __init__(self, args: list[object], log: Path) -> None:
        self.args = [sys.executable, "-m", "pprl", *map(str, args)]
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 60) -> Process:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen([*self.args, "--port", str(self.port)], stdout=out, stderr=out, env=env)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"pprl serve exited: {self.log.read_text()[-2000:]}")
            try:
                if httpx.get(f"{self.url}/v1/health", timeout=1).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise RuntimeError("pprl serve did not come up")

    def kill(self) -> None:
        """kill -9: no shutdown, no cleanup."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()


def forwarding_proxy(target: str | None = None, strip: str = ""):
    """An ASGI app that forwards every request, untouched but for the path, and its answer back.

    With ``target`` it is a reverse proxy (such as a bank's TLS-terminating gateway) that strips the path
    prefix ``strip`` and forwards to ``target``; without, a forward proxy for clients that set
    PPRL_PROXY (requests then name the whole URL). Headers other than hop-by-hop ones pass as they are.
    """
    hop = {"host", "connection", "keep-alive", "proxy-connection", "transfer-encoding", "content-length"}
    seen: list[str] = []

    async def app(scope, receive, send):
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        raw = scope.get("raw_path") or scope["path"].encode()
        path = raw.decode()
        if target is None:
            url = path if path.startswith("http") else f"http://{dict(scope['headers'])[b'host'].decode()}{path}"
        else:
            url = target + (path[len(strip):] if path.startswith(strip) else path)
        seen.append(url)
        headers = [(k.decode(), v.decode()) for k, v in scope["headers"] if k.decode().lower() not in hop]
        async with httpx.AsyncClient(trust_env=False) as client:
            response = await client.request(scope["method"], url, content=body, headers=headers)
        out = [(k.encode(), v.encode()) for k, v in response.headers.items() if k.lower() not in hop]
        await send({"type": "http.response.start", "status": response.status_code, "headers": out})
        await send({"type": "http.response.body", "body": response.content})

    app.seen = seen  # type: ignore[attr-defined]
    return app


@contextmanager
def served_app(app, **options) -> Iterator[str]:
    """Serve a bare ASGI ``app`` on a free port of 127.0.0.1 (TLS with tls_cert / tls_key)."""
    import uvicorn

    config = uvicorn.Config(app, host="127.0.0.1", port=free_port(), log_level="warning", lifespan="on",
                            ssl_certfile=options.get("tls_cert"), ssl_keyfile=options.get("tls_key"))
    with _running(config, bool(options.get("tls_cert"))) as url:
        yield url


def children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (from /proc)."""
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat[stat.rindex(")") + 2:].split()[1]) == pid:
                out.append(int(entry.name))
    return out


def gone(pids: list[int], timeout: float = 10.0) -> bool:
    """Whether all of ``pids`` have ended within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not any(Path(f"/proc/{p}").exists() for p in pids):
            return True
        time.sleep(0.1)
    return False
