"""``embrm serve``: a team's shared embedding cache over HTTP.

The service holds one :class:`~embrm.extractor.embedder.Embedder` and one writable
store and adds only HTTP, the batching of concurrent requests, dataset jobs, auth and
limits. Its client is the store's third backend, :class:`~embrm.store.service.ServiceStore`
(``--store http://...``), which needs neither torch nor transformers.
"""
