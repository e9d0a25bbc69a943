"""A tiny to-do app, shaped like many real ones: the engine is built at import time."""
