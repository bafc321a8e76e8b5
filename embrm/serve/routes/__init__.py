"""The routes of ``embrm serve``, one module per concern, each an ``APIRouter``:

* :mod:`.health`: liveness, Prometheus metrics (and as JSON), the served model;
* :mod:`.embeddings`: OpenAI's ``/v1/embeddings`` and embrm's native ``/v1/embed``;
* :mod:`.entries`: dataset uploads, dataset jobs, the catalog, entry pulls, removal, gc;
* :mod:`.rewards`: reward models in use: the native route, OpenRLHF's, rerank, score;
* :mod:`.rms`: published reward models (push, pull);
* :mod:`.page`: the team's web page (a static shell; its data comes from the routes above).

Routes are thin and import no other route: what two of them share (request and response
models, the item checks, the declared error answers) is :mod:`embrm.serve.protocol`.
"""
