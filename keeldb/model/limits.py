"""Every limit of DynamoDB's data model and request shapes, named with the unit last.

This module owns the numbers; it holds no logic. The values come from AWS's DynamoDB Developer
Guide pages "Quotas in Amazon DynamoDB" (ServiceQuotas.html) and "Constraints in Amazon
DynamoDB" (Constraints.html: keys, naming rules, data types, items, attributes, expression
parameters, transactions, API-specific constraints), and from the member constraints of the API
reference; each constant says why it exists. Code that enforces a limit imports it from here
and never repeats the literal.
"""

from __future__ import annotations

import re

# --- Keys, items and attributes (Constraints: "Partition keys and sort keys", "Items",
# "Attributes", "Naming rules") ---

ITEM_BYTES_MAX = 400 * 1024  # DynamoDB item limit, attribute names included (UTF-8 lengths).
PARTITION_KEY_BYTES_MAX = 2048  # A partition key value is at most 2048 bytes long.
PARTITION_KEY_BYTES_MIN = 1  # Key values of type S and B must be at least one byte long.
SORT_KEY_BYTES_MAX = 1024  # A sort key value is at most 1024 bytes long.
SORT_KEY_BYTES_MIN = 1  # Key values of type S and B must be at least one byte long.
NESTING_DEPTH_MAX = 32  # Nested attributes go at most 32 levels deep (the attribute is 1).
ATTRIBUTE_NAME_BYTES_MAX = 65535  # Names of non-key attributes: up to 64 KB - 1 in UTF-8.
KEY_ATTRIBUTE_NAME_BYTES_MAX = 255  # Names of key and index-projected attributes (schema).
ATTRIBUTE_NAME_BYTES_MIN = 1  # An attribute name must be at least one character long.

# --- Numbers (Constraints: "Data types") ---

NUMBER_DIGITS_MAX = 38  # A number has at most 38 significant digits.
# Positive range 1E-130 .. 9.9999999999999999999999999999999999999E+125 (and the negatives).
NUMBER_EXPONENT_MAX = 125  # Largest adjusted (scientific) exponent of a stored number.
NUMBER_EXPONENT_MIN = -130  # Smallest adjusted (scientific) exponent of a nonzero number.

# --- Tables and indexes (Constraints: "Naming rules"; Quotas: "Tables", "Secondary indexes") ---

TABLE_NAME_LENGTH_MIN = 3  # Table names are 3 to 255 characters long.
TABLE_NAME_LENGTH_MAX = 255  # Table names are 3 to 255 characters long.
INDEX_NAME_LENGTH_MIN = 3  # Index names follow the table-name rules.
INDEX_NAME_LENGTH_MAX = 255  # Index names follow the table-name rules.
# Allowed characters of table and index names: a-z, A-Z, 0-9, underscore, dash and dot.
TABLE_NAME_PATTERN = "[a-zA-Z0-9_.-]+"
TABLE_NAME_RE = re.compile(r"[a-zA-Z0-9_.-]+\Z")
TABLES_PER_REGION_MAX = 2500  # Default per-account, per-region table quota (adjustable).
LOCAL_SECONDARY_INDEXES_MAX = 5  # Per table; fixed quota.
GLOBAL_SECONDARY_INDEXES_MAX = 20  # Per table; default quota.
PROJECTED_ATTRIBUTES_MAX = 100  # NonKeyAttributes summed over all indexes of a table.
ITEM_COLLECTION_BYTES_MAX = 10 * 1024 * 1024  # Per partition key value, with an LSI.
TAGS_PER_RESOURCE_MAX = 50  # Tags on one table.
TAG_KEY_LENGTH_MAX = 128  # Unicode characters in a tag key.
TAG_VALUE_LENGTH_MAX = 256  # Unicode characters in a tag value.
LIST_TABLES_LIMIT_MAX = 100  # ListTables returns at most 100 names per page.

# --- Expressions (Constraints: "Expression parameters") ---

EXPRESSION_BYTES_MAX = 4 * 1024  # Any single expression string: 4 KB.
# ExpressionAttributeNames and ExpressionAttributeValues together: 2 MB in total; each
# substitution token (e.g. "#name", ":value") up to 255 bytes.
EXPRESSION_ATTRIBUTE_MAPS_BYTES_MAX = 2 * 1024 * 1024
EXPRESSION_ATTRIBUTE_NAME_BYTES_MAX = 255  # One "#name" or ":value" placeholder, in bytes.
EXPRESSION_OPERATORS_MAX = 300  # Operators or functions in one UpdateExpression.
EXPRESSION_IN_OPERANDS_MAX = 100  # Operands of an IN comparator.

# --- Requests (Constraints: "API-specific constraints", "DynamoDB transactions") ---

BATCH_WRITE_ITEMS_MAX = 25  # Put/delete requests in one BatchWriteItem call.
BATCH_WRITE_BYTES_MAX = 16 * 1024 * 1024  # Total request size of one BatchWriteItem call.
BATCH_GET_KEYS_MAX = 100  # Keys (over all tables) in one BatchGetItem call.
BATCH_GET_BYTES_MAX = 16 * 1024 * 1024  # Total response size of one BatchGetItem call.
TRANSACT_ITEMS_MAX = 100  # Actions in one TransactWriteItems or TransactGetItems call.
TRANSACT_BYTES_MAX = 4 * 1024 * 1024  # Aggregate item size of one transaction.
PAGE_BYTES_MAX = 1024 * 1024  # Query and Scan stop reading after 1 MB of items per page.
CLIENT_REQUEST_TOKEN_LENGTH_MAX = 36  # TransactWriteItems ClientRequestToken characters.
SCAN_TOTAL_SEGMENTS_MAX = 1_000_000  # Parallel Scan TotalSegments upper bound.

# --- Capacity (Constraints: "Read/write capacity mode", capacity unit sizes) ---

READ_UNIT_BYTES = 4 * 1024  # One read capacity unit reads up to 4 KB (strongly consistent).
WRITE_UNIT_BYTES = 1024  # One write capacity unit writes up to 1 KB.
