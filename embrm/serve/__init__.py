"""``embrm serve``: a team's shared embedding cache over HTTP, and its torch-free client.

The service holds one :class:`~embrm.extractor.embedder.Embedder` and one
:class:`~embrm.store.store.Store` and adds only HTTP, the batching of concurrent
requests, dataset jobs, auth and limits. :mod:`embrm.serve.client` reads a store
through it without torch or transformers.
"""
