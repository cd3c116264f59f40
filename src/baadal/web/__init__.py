"""The web portal: pages, the console in the browser and its WebSocket relay."""
