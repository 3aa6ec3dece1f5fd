"""Execution Simulator: turns approved orders into fills or rejections."""

from domain.execution.simulator import CostModel, Fill, fill_at_next_open, order_id_for

__all__ = ["CostModel", "Fill", "fill_at_next_open", "order_id_for"]
