"""The package modules the lessons use whose names may move (one line each to fix after a rename)."""

from orderflow import client as order_client  # noqa: F401
from orderflow.db.repository import Repository  # noqa: F401
