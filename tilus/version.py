"""The package's version, in a leaf module so that every layer (cache keys, artefacts, the tuning
database) can read it without importing the package root."""

__version__ = "0.1.0"
