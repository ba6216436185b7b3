"""The Lambda-compatible function service and its sandboxes."""
