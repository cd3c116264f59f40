"""Mail: what Baadal tells people (requests, finished tasks, idle VMs, accounts).

``notify`` decides who is told what and writes the mails to the outbox table in the
caller's transaction; ``compose`` fills the plain-text templates (one file each, in
``templates/``); ``outbox`` keeps the rows; ``sender`` is the periodic job that sends
them over SMTP, retrying with back-off.
"""
