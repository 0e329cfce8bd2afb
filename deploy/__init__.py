"""Deployment templates, shipped in the wheel as package data: `replaystore serve` reads prefect.yaml."""
