"""The request side: routing, parsing, auth, responses and the handlers."""
