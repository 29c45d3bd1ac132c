"""Deterministic orchestration: imports only temporalio, the standard library and models."""

from orderflow.workflows.order import OrderWorkflow
from orderflow.workflows.shipping import ShippingWorkflow

__all__ = ["OrderWorkflow", "ShippingWorkflow"]
