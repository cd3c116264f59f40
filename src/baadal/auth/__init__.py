"""Accounts: local users with argon2 hashes or LDAP, roles from memberships (the seed's
auth_user module)."""
