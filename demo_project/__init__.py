"""A small Django project that uses django-vectorindex: PyPI packages and their neighbours."""
