"""How an extraction plan runs: in this process (:mod:`.local`) or on Ray Data actors
(:mod:`.ray`). Both start from the same :class:`~embrm.extractor.plan.ExtractionPlan` and
end with the store's ``finish_entry``."""
