"""The HTTP service of the production extractor (`python -m inference.serve`)."""
