"""`keeldb bench`: YCSB-style workloads against any DynamoDB endpoint."""
