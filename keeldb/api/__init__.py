"""HTTP front end: the DynamoDB JSON 1.0 protocol, SigV4, and the one place where client
errors become HTTP responses.
"""
