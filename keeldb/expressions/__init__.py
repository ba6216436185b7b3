"""Parser and evaluator for DynamoDB expressions (condition, key condition, filter,
projection, update), with `#name` and `:value` substitution.

Pure: depends only on `keeldb.model`.
"""
