"""Celery tasks: thin and idempotent. Each takes ids and calls one service."""
