"""The service's protocol, one module per concern: what a request may hold, what an
answer holds, and the checks items share. Routes (:mod:`embrm.serve.routes`) import
these and never each other, so a request shape is defined, and each rule checked, once.

* :mod:`.errors`: the OpenAI-shaped error body and the error responses each route
  declares in the OpenAPI spec;
* :mod:`.items`: texts and items, and their checks (count, UTF-8, something to embed);
* :mod:`.embeddings`: ``/v1/embeddings`` and ``/v1/embed``;
* :mod:`.rewards`: ``/v1/rewards``, OpenRLHF's ``/get_reward``, rerank, score;
* :mod:`.entries`: uploads, dataset jobs, the catalog.

Response models are declared in the OpenAPI spec (``responses={200: ...}``) and checked
against real answers by the tests; the routes still return plain dicts, so a large
answer is not validated field by field on its way out.
"""
