"""Physical and virtual hosts: reachability, probing and power (the seed's host_helper)."""
