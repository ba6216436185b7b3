"""Attribute values, numbers, validation, item size, capacity units and key encoding.

Pure: no IO, no clocks, no threads. Values are kept in DynamoDB's own JSON shape
(`{"S": "x"}`, `{"N": "1.5"}`, `{"B": "<base64>"}`, `{"SS": [...]}`, `{"M": {...}}` ...), with
numbers normalised, so that the wire form and the stored form are the same object.

- `errors`: every client error type, with its wire namespace and HTTP status.
- `limits`: every documented limit, named with the unit last.
- `numbers`: the N type: canonical text, range and precision errors, exact arithmetic.
- `values`: validation of values and items as received, equality, order, item size.
- `keys`: order-preserving key encoding and the store key layout and ranges.
- `capacity`: read and write capacity units for a number of bytes.
"""
