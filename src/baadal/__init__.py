"""Baadal: a small private IaaS cloud on libvirt."""

__version__ = "0.1.0"
