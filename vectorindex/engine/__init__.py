"""The engine: vector codecs and numpy kernels, free of Django.

Everything here works on numpy arrays and plain Python values so that it can be
tested and reasoned about without a database. The Django skin (fields,
expressions, querysets) calls into it.
"""
