"""How `memplan serve` (and the browser tests' background server) run the app under uvicorn: the h11 protocol with
a bound on request headers and a deadline for sending them, a bound on open connections, one or more workers."""

from __future__ import annotations

from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol

from api.settings import Settings, SettingsError


def _header_timeout_from_env() -> float:
    try:
        return Settings.from_env().header_timeout
    except SettingsError:  # memplan serve has already refused bad settings with a message
        return Settings.header_timeout

#: request line + headers, bytes (h11's default is 16 KiB; a 64 MB header once cost 4.8 s of CPU)
MAX_HEADER_BYTES = 64 * 1024


class DeadlineH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a deadline for a request's headers: a client that connects (or finishes a
    response on a kept-alive connection) and does not complete its next request line and headers within
    `header_timeout` seconds is disconnected (slowloris). uvicorn's keep-alive timer stops at the first byte of
    a new request, so a slow request would otherwise hold its connection forever."""

    #: from MEMPLAN_HEADER_TIMEOUT: each worker process imports this module afresh (uvicorn pickles the class by
    #: reference, so it must live at module level); uvicorn_options sets it for an in-process server
    header_timeout = _header_timeout_from_env()

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        self._arm()

    def _arm(self) -> None:
        self._waiting_since_cycle = self.cycle
        self._deadline = self.loop.call_later(self.header_timeout, self._too_slow)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self._deadline is not None and self.cycle is not self._waiting_since_cycle:
            self._deadline.cancel()  # a new request's headers are complete
            self._deadline = None

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            if self._deadline is not None:
                self._deadline.cancel()
            self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        super().connection_lost(exc)

    def _too_slow(self) -> None:
        self._deadline = None
        if self.cycle is self._waiting_since_cycle and not self.transport.is_closing():
            self.transport.close()


def uvicorn_options(settings: Settings, workers: int | None = None, log_level: str = "info") -> dict[str, Any]:
    """The keyword arguments of uvicorn.run / uvicorn.Config for the app factory under these settings."""
    DeadlineH11Protocol.header_timeout = settings.header_timeout
    return dict(host=settings.host, port=settings.port, workers=workers, log_level=log_level,
                access_log=log_level == "debug", http=DeadlineH11Protocol,
                h11_max_incomplete_event_size=MAX_HEADER_BYTES,
                limit_concurrency=settings.max_connections, timeout_keep_alive=5)
