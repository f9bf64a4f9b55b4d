"""Layer-wise relevance propagation on the network: composites and the per-unit relevance read-out."""
