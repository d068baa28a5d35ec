"""The app's own tables.

None yet: the index's storage (heads, posting lists, versions, WAL, snapshots)
arrives with ``VectorIndex``. User models declare ``VectorField`` themselves.
"""
