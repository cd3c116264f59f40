"""The service layer: the one place the CLI, REST API and web portal call.

Each function validates its whole input before writing anything, raises
:mod:`baadal.errors` exceptions with a message fit for a person, and works inside the
caller's session so the front door decides where the transaction ends.
"""
