"""Mail to the people of the cloud."""
