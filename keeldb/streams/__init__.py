"""Change streams derived from committed log records."""
