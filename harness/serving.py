"""`serve`'s app on a real socket for tests and benchmarks: uvicorn in a thread of this process,
listening on a free loopback port, stopped (requests in flight finished) when the block ends."""

import contextlib
import threading
import time

import uvicorn

from heads.serve.service import listening_socket, url_of


@contextlib.contextmanager
def served(app, host="127.0.0.1", start_timeout=30.0, **config):
    """Yields the URL of `app` served on host (loopback) and a free port; config: uvicorn.Config's."""
    sock = listening_socket(host, 0)
    server = uvicorn.Server(uvicorn.Config(app, log_config=None, access_log=False, lifespan="on", **config))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + start_timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the server did not start")
        time.sleep(0.01)
    try:
        yield url_of(sock)
    finally:
        server.should_exit = True
        thread.join(start_timeout)
        sock.close()
