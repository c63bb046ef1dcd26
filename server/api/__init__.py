"""The HTTP layer: the routes of every protocol and API, each a parser and an encoder around one pipeline."""
