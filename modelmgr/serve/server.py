"""Run the application on uvicorn until Ctrl-C or SIGTERM."""
from __future__ import annotations

import os
import socket
from typing import TYPE_CHECKING, Callable

from modelmgr.errors import ModelmgrError

if TYPE_CHECKING:  # pragma: no cover
    from modelmgr.project.config import Config
    from modelmgr.serve.settings import ServeSettings


def bind(settings: "ServeSettings") -> socket.socket:
    """Bind before anything slow is imported, so a taken port is one clear line at once."""
    host, port = settings.address.host, settings.address.port
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ModelmgrError(
            f"cannot listen on {settings.address.url}: {exc.strerror or exc}. Another server may be running there "
            f"(modelmgr ps shows it); pick another --port."
        ) from None
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def run_server(config: "Config", settings: "ServeSettings", sock: socket.socket, *, announce: Callable[[str], None]) -> None:
    # OpenMP's default lets torch's threads spin while they wait for each other. A server shares
    # its machine (its clients, other services); when a sibling thread is descheduled, a batched
    # matmul's threads spin waiting for it: on a busy 2-core machine a [4 x 1024] x [1024 x 2560]
    # matmul took 10-20 ms spinning and under 1 ms passive. Must be set before torch loads
    # (at the first model load); a value the user set wins.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    try:
        import uvicorn

        from modelmgr.serve.app import create_app
    except ImportError as exc:
        raise ModelmgrError(f"the server needs {exc.name}, which is not installed: pip install 'modelmgr[serve]'.") from None
    app = create_app(config, settings)
    uv_config = uvicorn.Config(
        app, log_level="warning", access_log=False, lifespan="on", timeout_graceful_shutdown=5,
        # A request line can carry nothing secret, but headers can: uvicorn never logs them.
        server_header=False,
    )
    server = uvicorn.Server(uv_config)
    announce(f"Serving on {settings.address.url} (OpenAI API at {settings.address.client_url}/v1). Ctrl-C stops.")
    server.run(sockets=[sock])
