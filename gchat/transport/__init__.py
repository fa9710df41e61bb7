"""Transport: the WebSocket connection, HTTP endpoints and request dispatch."""
