"""Batch reranking of whole runs: ``rerank rerank-run`` in this process (:mod:`rerank.batch.engine`) or on a
Ray cluster (:mod:`rerank.batch.rayengine`)."""
