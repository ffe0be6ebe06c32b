"""Helpers the tests share: native-format writers, fault drivers, processes, a report study."""
