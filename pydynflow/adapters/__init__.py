"""Pluggable edges of the engine; each family has a base, implementations and a test stub."""
