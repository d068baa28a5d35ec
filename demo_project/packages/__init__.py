"""The demo app: PyPI packages with a sentence embedding of their summary."""
