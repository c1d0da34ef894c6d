"""Drivers carry out the steps of a plan against real (or simulated) infrastructure."""

from app.drivers.base import Driver, StepContext, StepFailed
from app.drivers.registry import driver_for

__all__ = ["Driver", "StepContext", "StepFailed", "driver_for"]
