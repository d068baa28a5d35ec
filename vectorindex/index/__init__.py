"""The index: declarations and their per-process head indexes, writes, search, jobs, build, recovery.

Everything here runs inside Django and a database transaction; the numpy and
hnswlib work it asks for is :mod:`vectorindex.engine`'s, and the SQL
:mod:`vectorindex.storage`'s.
"""
