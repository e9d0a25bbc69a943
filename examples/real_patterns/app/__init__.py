"""A small FastAPI app whose tests use the patterns of real suites."""
