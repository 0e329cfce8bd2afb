"""The table contracts (one JSON file per kind), shipped in the wheel as package data.

This folder installs as `replaystore.contracts`; `replaystore.schemas` reads it with importlib.resources.
"""
