"""``embrm serve``: the shared embedding cache over HTTP. Defaults come from
:class:`~embrm.serve.settings.Settings`."""
from __future__ import annotations

import importlib.util
import logging
import socket
import sys
from typing import Any

import click

from embrm.extractor.cli import model_options
from embrm.options import NAMED_RUN, store_option
from embrm.serve.settings import DEFAULTS as D


@click.command("serve")
@model_options
@store_option
@click.option("--host", default=D.host, show_default=True,
              help="Address to listen on; anything but loopback needs tokens.")
@click.option("--port", type=click.IntRange(0, 65535), default=D.port, show_default=True)
@click.option("--token-file", type=click.Path(dir_okay=False), default=None,
              help="Lines of name:token; with $EMBRM_TOKEN, the bearer tokens that may call the service.")
@click.option("--max-body-bytes", type=click.IntRange(min=1024), default=D.max_body_bytes, show_default=True)
@click.option("--max-upload-bytes", type=click.IntRange(min=1024), default=D.max_upload_bytes, show_default=True,
              help="Largest dataset upload (PUT /v1/datasets) or reward-model push.")
@click.option("--max-items", type=click.IntRange(min=1), default=D.max_items, show_default=True,
              help="Items per request.")
@click.option("--max-queue", type=click.IntRange(min=1), default=D.max_queue, show_default=True,
              help="Items waiting for the model before requests get 429.")
@click.option("--max-wait-ms", type=click.FloatRange(min=0), default=D.max_wait_ms, show_default=True,
              help="How long the model thread waits for concurrent requests to batch together.")
@click.option("--commit-items", type=click.IntRange(min=1), default=D.commit_items, show_default=True)
@click.option("--commit-seconds", type=click.FloatRange(min=0.01), default=D.commit_seconds, show_default=True)
@click.option("--window", type=click.IntRange(min=1), default=D.window, show_default=True,
              help="Rows per commit of a dataset job.")
@click.option("--header-timeout", type=click.FloatRange(min=0.1), default=D.header_timeout, show_default=True,
              help="Seconds a request's headers may take before its connection is closed.")
@click.option("--body-idle-timeout", type=click.FloatRange(min=0.1), default=D.body_idle_timeout, show_default=True,
              help="Seconds a request body may pause between pieces (408 beyond).")
@click.option("--body-timeout", type=click.FloatRange(min=0.1), default=D.body_timeout, show_default=True,
              help="Seconds a whole request body may take (408 beyond).")
@click.option("--rm", "rms", type=NAMED_RUN, multiple=True, metavar="[NAME=]RUN_DIR",
              help="A trained run to serve as a reward model (repeatable); NAME defaults to the directory's name. "
                   "Runs published in the store are served too.")
@click.option("--refresh-seconds", type=click.FloatRange(min=0.05), default=D.refresh_seconds, show_default=True,
              help="How often this replica looks for reward models and orphaned dataset jobs other replicas left.")
@click.option("--lease-seconds", type=click.FloatRange(min=0.5), default=D.lease_seconds, show_default=True,
              help="A dataset job's lease: another replica takes the job over this long after its replica died.")
@click.option("--replica-id", default=D.replica_id, help="This replica's name in job records (default: host-pid).")
@click.option("--ray", "use_ray", is_flag=True,
              help="Deploy the service on Ray Serve (this Ray cluster's replicas, one store; docs/replicas.md).")
@click.option("--address", default=None, help="With --ray: the Ray cluster to join (default: start a local one).")
@click.option("--replicas", type=click.IntRange(min=1), default=1, show_default=True, help="With --ray: replicas.")
@click.option("--gpus-per-replica", type=click.FloatRange(min=0), default=0.0, show_default=True,
              help="With --ray: GPUs each replica asks Ray for.")
@click.option("--log-level", type=click.Choice(["critical", "error", "warning", "info", "debug"]),
              default=D.log_level, show_default=True)
def serve_cmd(**kw: Any) -> None:
    """Serve embeddings from the store, computing misses with the model (OpenAI-compatible)."""
    from embrm.errors import EmbrmError

    missing = [m for m in ("fastapi", "uvicorn", "prometheus_client") if importlib.util.find_spec(m) is None]
    if missing:
        raise EmbrmError(f"embrm serve needs {', '.join(missing)}: `pip install 'embrm[serve]'`")
    from embrm.extractor.cli import embedding_spec
    from embrm.options import quiet_third_party
    from embrm.serve.auth import check_bind, load_tokens
    from embrm.serve.runtime import build

    tokens = load_tokens(kw.pop("token_file"))
    check_bind(kw["host"], tokens)
    quiet_third_party()
    spec = embedding_spec(kw)
    device, batch_tokens, store_uri = kw.pop("device"), kw.pop("batch_tokens"), kw.pop("store_uri")
    named = kw.pop("rms")
    rms = dict(named)
    if len(rms) != len(named):
        raise EmbrmError("two --rm runs have the same name; write NAME=RUN_DIR to tell them apart")
    use_ray, address, replicas, gpus = kw.pop("use_ray"), kw.pop("address"), kw.pop("replicas"), \
        kw.pop("gpus_per_replica")
    settings = D.with_(**kw)
    if use_ray:
        from embrm.serve.ray_serve import deploy, wait_and_shutdown

        url = deploy(spec, store_uri, device, batch_tokens, tokens, settings, rms, replicas, gpus, address=address)
        click.echo(f"embrm serve: {url}  ray serve, {replicas} replica(s), {gpus:g} GPU(s) each  store {store_uri}  "
                   f"auth {'on' if tokens else 'off'}")
        sys.stdout.flush()
        wait_and_shutdown()
        return
    elif address is not None or replicas != 1 or gpus:
        raise EmbrmError("--address, --replicas and --gpus-per-replica go with --ray")
    app, svc = build(spec, store_uri, device, batch_tokens, tokens, settings, rms)
    family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((settings.host, settings.port))
        sock.listen(2048)  # connections queue from now on, before the line below tells anyone the URL
    except OSError as e:
        raise EmbrmError(f"cannot listen on {settings.host}:{settings.port} ({e.strerror}); pick another --port") \
            from None
    host, port = sock.getsockname()[:2]
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s")
    click.echo(f"embrm serve: http://{host}:{port}  model {svc.model_name} [{svc.model_hash[:12]}]  "
               f"store {svc.store.uri}  auth {'on' if tokens else 'off'}")
    sys.stdout.flush()
    from embrm.serve.runtime import run_server

    run_server(app, settings, sock)
