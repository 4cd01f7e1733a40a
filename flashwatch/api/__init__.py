"""REST API (FastAPI, /v1): cameras, rules, alerts, queries, tokens, health, metrics."""

from flashwatch.api.app import create_app

__all__ = ["create_app"]
