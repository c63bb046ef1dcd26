"""The stores replicas share (`database_url`, `redis_url`): connections, schema and health, below serving."""
