"""Monitoring: RRD history of hosts and VMs, and graphs drawn from it."""
