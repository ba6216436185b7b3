"""PartiQL for DynamoDB: ExecuteStatement and BatchExecuteStatement.

The parser (`parser`) and the translation into DynamoDB expressions (`translate`) are pure;
`operations` registers the two operations and runs each statement through the item, Query
and Scan handlers. Importing this package registers the operations.
"""

from keeldb.engine.partiql import operations

__all__ = ["operations"]
