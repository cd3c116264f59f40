"""Mail to the people a change concerns."""
