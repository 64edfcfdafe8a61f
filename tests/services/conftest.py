"""Fixtures for the service tests (implementations in tests/services/helpers.py)."""

from tests.services.helpers import notify_sink, spawn

__all__ = ["notify_sink", "spawn"]
