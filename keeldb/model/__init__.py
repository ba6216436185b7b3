"""Attribute values, numbers, validation, item size, capacity units and key encoding.

Pure: no IO, no clocks, no threads. Values are kept in DynamoDB's own JSON shape
(`{"S": "x"}`, `{"N": "1.5"}`, `{"B": "<base64>"}`, `{"SS": [...]}`, `{"M": {...}}` ...), with
numbers normalised, so that the wire form and the stored form are the same object.
"""
