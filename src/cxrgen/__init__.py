"""cxrgen: how far a chest X-ray classifier can be trusted outside the hospital that trained it."""

__version__ = "0.1.0"
