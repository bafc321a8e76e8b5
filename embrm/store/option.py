"""The ``--store`` option every command shares.

It lives below ``store/`` so that the store's own commands (:mod:`embrm.store.cli`) need
nothing from the modules above the store: :mod:`embrm.options` re-exports it for the
other commands. Click only, so each command module stays a cheap import.
"""
from __future__ import annotations

import click

store_option = click.option(
    "--store", "store_uri", default=None, envvar="EMBRM_STORE", show_envvar=True, metavar="URI",
    help="Store: a local path, an object-store URI (s3://bucket/prefix) or a service (http://host:port). "
         "Default: $EMBRM_STORE, else ./embrm-store.")
