"""The web portal: server-rendered pages (Jinja2, HTMX) on the API's application.

A door like the CLI and the API: it reaches the cloud only through baadal.services.
"""
