"""Network IO that drives the sans-IO cores between nodes."""
