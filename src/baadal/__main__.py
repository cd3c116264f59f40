"""``python -m baadal`` = the ``baadal`` command."""

from baadal.cli.main import app

app()
