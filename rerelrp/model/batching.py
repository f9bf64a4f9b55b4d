"""How many rows one pass through the network may hold: one rule for LRP, prediction and statistics."""
from __future__ import annotations

MAX_BATCH = 512  # rows per stacked pass (samples x sub-networks) at 28 px and below


def rows_per_pass(input_size):
    """Rows per stacked pass: 512 up to 28 px, then fewer in proportion to the pixels, so that the
    activations an LRP pass keeps stay near their 28-px size (512 rows at 128 px took gigabytes)."""
    return MAX_BATCH if input_size <= 28 else max(16, MAX_BATCH * 28 * 28 // input_size**2)
