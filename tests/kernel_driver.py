"""The tests' kernel driver is the public one (tactus_kernel.testing)."""

from tactus_kernel.testing import Card, CellRun, KernelDriver

__all__ = ["Card", "CellRun", "KernelDriver"]
