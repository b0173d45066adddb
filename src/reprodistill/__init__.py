"""reprodistill: reprogram a frozen vision foundation model for a task and distill it into a small student."""

__version__ = "0.1.0"
