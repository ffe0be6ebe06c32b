"""Plumbing every stage shares: atomic file writes, locks, worker pools and signal handling.

Imports nothing else of cxrgen.
"""
