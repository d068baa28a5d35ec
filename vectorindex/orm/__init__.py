"""The ORM side: the queryset that plans a distance query, and the exact path that answers it without an index."""
