"""The app on a free loopback port in a background thread, for the browser tests and the README screenshot."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from api.settings import Settings


@contextmanager
def serving(settings: Settings | None = None, timeout_s: float = 120) -> Iterator[str]:
    """Run create_app(settings) under uvicorn on 127.0.0.1 and a free port; yield its base URL once /healthz
    answers (the app builds one model at startup, hence the generous timeout); stop it on exit."""
    import httpx
    import uvicorn

    from api.app import create_app

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    from api.server import uvicorn_options

    s = settings or Settings()
    options = {**uvicorn_options(s, log_level="warning"), "host": "127.0.0.1", "port": port}
    server = uvicorn.Server(uvicorn.Config(create_app(s), **options))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if httpx.get(base + "/healthz", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError(f"the app did not answer {base}/healthz within {timeout_s:g} s")
        time.sleep(0.05)
    try:
        yield base
    finally:
        server.should_exit = True
        thread.join(timeout=10)
