"""The REST API (``/api/v1``): a door like the CLI. Routes are thin: they authenticate
the caller, call one service function in one transaction, and shape its answer; errors
become RFC 9457 problems carrying the same one-line messages the CLI prints."""
