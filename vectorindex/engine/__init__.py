"""The engine: the index's algorithms on numpy arrays, free of Django and of the database.

Everything here works on numpy arrays and plain Python values so that it can be
tested and reasoned about without a database (``tests/engine`` runs without
Django: ``scripts/test-engine.sh``). The Django skin (fields, expressions,
querysets) and the index layer (``vectorindex/index``, which reads and writes
through ``vectorindex/storage``) call into it: codecs and distances, the head
index and routing, posting payloads, k-means, a query's candidates and re-rank,
and the replay of the head WAL.
"""
