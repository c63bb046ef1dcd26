"""The async batch API (`queueRequest`): jobs kept in SQLite, and the runner that answers them."""
