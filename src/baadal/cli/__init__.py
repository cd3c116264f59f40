"""Command-line front door. Each sub-command group lives in its own module."""
