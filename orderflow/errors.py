"""Typed errors. Business errors become non-retryable Temporal ApplicationErrors."""


class OrderflowError(Exception):
    """Base of every error this package raises on purpose."""


class InvalidOrder(OrderflowError, ValueError):
    """The order cannot be processed as given (no items, bad quantity, bad id)."""


class OrderNotFound(OrderflowError, LookupError):
    pass


class PaymentConflict(OrderflowError):
    """The payment id already belongs to another order."""


class PaymentClosed(OrderflowError):
    """The payment was refunded or voided; it can never be charged again."""


class CarrierRejected(OrderflowError):
    """The carrier will not take the parcel to this address (it does not deliver to PO boxes)."""


class ShipmentClosed(OrderflowError):
    """The shipment was settled (failed or cancelled) or never prepared: it cannot be dispatched."""
