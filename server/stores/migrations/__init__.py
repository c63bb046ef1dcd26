"""The shared database's schema, as numbered SQL files that server/stores/postgres.py applies in order."""
