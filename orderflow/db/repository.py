"""Every read and write of the app database, through one ``Repository``.

Writes are idempotent: they may run twice, or twice at once (a timed-out attempt
can still be finishing while its retry runs), and leave the same rows. Inserts
ignore duplicates; state changes are conditional updates that only move forward.

The methods live with their aggregate, one module each; ``Repository`` puts them together so
callers hold one object:

- ``orders``: the order's row and its state (``insert_order``, ``advance_state``, ...);
- ``payments``: ``charge_payment``, ``refund_payment``, ``close_payment``;
- ``shipments``: ``prepare_shipment``, ``dispatch_shipment``, ``settle_shipment``;
- ``step_ledger``: ``begin_attempt``, ``record_attempt``, ``close_step``, ``settle_step``;
- ``audit_events``: ``write_progress``, the workflows' decisions and the order's state at once;
- ``reads``: ``ping``, ``list_orders``, ``order_view``.
"""

from __future__ import annotations

from sqlalchemy.engine import Engine

from orderflow.db.audit_events import AuditEvents
from orderflow.db.engine import make_engine, parse_ts, utcnow
from orderflow.db.orders import Orders
from orderflow.db.payments import Payments
from orderflow.db.reads import Reads
from orderflow.db.shipments import Shipments
from orderflow.db.step_ledger import StepLedger, StepRecord

__all__ = ["Repository", "StepRecord", "make_engine", "parse_ts", "utcnow"]


class Repository(Orders, Payments, Shipments, StepLedger, AuditEvents, Reads):
    """The app database: one engine, every aggregate's methods."""

    def __init__(self, engine: Engine):
        self.engine = engine

    @classmethod
    def from_url(cls, url: str) -> Repository:
        return cls(make_engine(url))
