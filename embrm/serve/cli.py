"""``embrm serve``: the shared embedding cache over HTTP."""
from __future__ import annotations

from typing import Any

import click

from embrm.extractor.cli import model_options
from embrm.options import store_option


@click.command("serve")
@model_options
@store_option
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on; anything but loopback needs tokens.")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True)
@click.option("--token-file", type=click.Path(dir_okay=False), default=None,
              help="Lines of name:token; with $EMBRM_TOKEN, the bearer tokens that may call the service.")
@click.option("--max-body-bytes", type=click.IntRange(min=1024), default=32 << 20, show_default=True)
@click.option("--max-upload-bytes", type=click.IntRange(min=1024), default=1 << 30, show_default=True,
              help="Largest dataset upload (PUT /v1/datasets).")
@click.option("--max-items", type=click.IntRange(min=1), default=2048, show_default=True,
              help="Items per request.")
@click.option("--max-queue", type=click.IntRange(min=1), default=65536, show_default=True,
              help="Items waiting for the model before requests get 429.")
@click.option("--max-wait-ms", type=click.FloatRange(min=0), default=5.0, show_default=True,
              help="How long the model thread waits for concurrent requests to batch together.")
@click.option("--commit-items", type=click.IntRange(min=1), default=1024, show_default=True)
@click.option("--commit-seconds", type=click.FloatRange(min=0.01), default=2.0, show_default=True)
@click.option("--window", type=click.IntRange(min=1), default=1024, show_default=True,
              help="Rows per commit of a dataset job.")
@click.option("--log-level", type=click.Choice(["critical", "error", "warning", "info", "debug"]),
              default="warning", show_default=True)
def serve_cmd(**kw: Any) -> None:
    """Serve embeddings from the store, computing misses with the model (OpenAI-compatible)."""
    import importlib.util
    import logging
    import socket
    import sys

    from embrm.errors import EmbrmError

    missing = [m for m in ("fastapi", "uvicorn", "prometheus_client") if importlib.util.find_spec(m) is None]
    if missing:
        raise EmbrmError(f"embrm serve needs {', '.join(missing)}: `pip install 'embrm[serve]'`")
    from embrm.extractor.cli import embedding_spec
    from embrm.options import quiet_third_party
    from embrm.serve.app import Limits
    from embrm.serve.auth import check_bind, load_tokens
    from embrm.serve.runtime import Tuning, build

    tokens = load_tokens(kw["token_file"])
    check_bind(kw["host"], tokens)
    quiet_third_party()
    spec = embedding_spec(kw)
    limits = Limits(kw["max_body_bytes"], kw["max_upload_bytes"], kw["max_items"], kw["max_queue"])
    tuning = Tuning(kw["max_wait_ms"], kw["commit_items"], kw["commit_seconds"], kw["window"])
    app, svc = build(spec, kw["store_uri"], kw["device"], kw["batch_tokens"], tokens, limits, tuning)
    family = socket.AF_INET6 if ":" in kw["host"] else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((kw["host"], kw["port"]))
        sock.listen(2048)  # connections queue from now on, before the line below tells anyone the URL
    except OSError as e:
        raise EmbrmError(f"cannot listen on {kw['host']}:{kw['port']} ({e.strerror}); pick another --port") from None
    host, port = sock.getsockname()[:2]
    logging.basicConfig(level=kw["log_level"].upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s")
    click.echo(f"embrm serve: http://{host}:{port}  model {svc.model_name} [{svc.model_hash[:12]}]  "
               f"store {svc.store.uri}  auth {'on' if tokens else 'off'}")
    sys.stdout.flush()
    import uvicorn

    config = uvicorn.Config(app, log_level=kw["log_level"], lifespan="on", access_log=False)
    uvicorn.Server(config).run(sockets=[sock])
