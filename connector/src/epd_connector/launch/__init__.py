"""The launch contract (operator <-> pod): config types, role wiring, and the `vllm serve` argv."""
