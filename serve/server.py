"""Run the app under uvicorn: load the models first (errors before binding), print where it
listens (port 0 picks a free one), and on SIGTERM/SIGINT turn readiness off, let in-flight
requests finish, stop the batchers, exit 0."""

from __future__ import annotations

import json
import logging
import signal
import sys
import threading

import uvicorn

from .app import ServerState, create_app, load_models
from .config import ServerConfig

log = logging.getLogger("serve")


class _Server(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, state: ServerState):
        super().__init__(config)
        self.state = state
        self.grpc = None  # grpc.aio.Server when --grpc-port is given

    def handle_exit(self, sig, frame) -> None:
        # Not super().handle_exit: uvicorn re-raises the captured signal once it has shut down, so a
        # graceful stop would end with status 143; here a finished graceful shutdown exits 0.
        if self.should_exit and sig == signal.SIGINT:
            self.force_exit = True  # a second Ctrl-C: stop waiting for in-flight requests
            return
        drain = self.state.config.drain_s
        if self.state.draining or drain <= 0:
            self.state.draining = True
            self.should_exit = True
            return
        # Readiness off now; keep serving for drain_s so load balancers stop sending, then shut down.
        self.state.draining = True
        timer = threading.Timer(drain, setattr, (self, "should_exit", True))
        timer.daemon = True
        timer.start()

    async def startup(self, sockets=None) -> None:
        cfg, gport = self.state.config, None
        if cfg.grpc_port is not None:  # bound before anything starts, so a taken port stops the server cleanly
            from . import grpc_service  # grpcio only when asked for

            try:
                self.grpc, gport = grpc_service.bind(self.state, cfg.host, cfg.grpc_port)
            except OSError as e:
                log.error("%s", e)
                self.should_exit = True
                return
        await super().startup(sockets)
        if self.should_exit:
            return
        host, port = self.servers[0].sockets[0].getsockname()[:2]
        also = ""
        if self.grpc is not None:
            await self.grpc.start()  # after the app's lifespan has started the batchers
            also = f" and grpc://{host}:{gport}"
        models = ", ".join(f"{n} ({m.inputs[0].datatype} {m.inputs[0].shape})" for n, m in self.state.models.items())
        print(f"transferzoo serve: listening on http://{host}:{port}{also} (models: {models})", flush=True)

    async def shutdown(self, sockets=None) -> None:
        # gRPC first, while the batchers (stopped in the app's lifespan, below) still run: calls in flight finish
        if self.grpc is not None:
            await self.grpc.stop(self.state.config.timeout_s)
        await super().shutdown(sockets)


def _json_400(msg: str) -> bytes:
    return json.dumps({"error": f"malformed HTTP request: {msg}"}).encode()


def http_protocol():
    """uvicorn's HTTP protocol with its framing errors (a bad request line, a broken header, a
    chunked body that does not parse) answered in the server's JSON error shape instead of plain text."""
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol as Base
    except ImportError:  # httptools missing: uvicorn's pure-Python h11 protocol
        from uvicorn.protocols.http.h11_impl import H11Protocol

        class H11JsonErrors(H11Protocol):
            def send_400_response(self, msg: str) -> None:
                import h11

                body = _json_400(msg)
                headers = [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ]
                self.transport.write(
                    self.conn.send(h11.Response(status_code=400, headers=headers, reason=b"Bad Request"))
                )
                self.transport.write(self.conn.send(h11.Data(data=body)))
                self.transport.write(self.conn.send(h11.EndOfMessage()))
                self.transport.close()

        return H11JsonErrors

    class HttpToolsJsonErrors(Base):
        def send_400_response(self, msg: str) -> None:
            body = _json_400(msg)
            head = [b"HTTP/1.1 400 Bad Request\r\n"]
            for name, value in self.server_state.default_headers:
                head += [name, b": ", value, b"\r\n"]
            head += [
                b"content-type: application/json\r\ncontent-length: ",
                str(len(body)).encode(),
                b"\r\nconnection: close\r\n\r\n",
            ]
            self.transport.write(b"".join(head) + body)
            self.transport.close()

    return HttpToolsJsonErrors


def run(config: ServerConfig) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    state = ServerState(config, load_models(config))
    app = create_app(state)
    uv = uvicorn.Config(
        app,
        host=config.host,
        port=config.port,
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=int(config.timeout_s) + 1,
        server_header=False,
        lifespan="on",
        http=http_protocol(),
        # connections + requests in flight; past it uvicorn answers 503 (plain text: its own response)
        limit_concurrency=config.limits.max_connections,
        timeout_keep_alive=5,
    )
    server = _Server(uv, state)
    server.run()
    return 0 if server.started else 1
