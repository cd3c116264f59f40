"""Virtual machines: the seed's VM_helper, VM_disk, VM_snapshot, VM_clone, VM_utilization.

Each operation is a task handler, registered where it is defined (``@handler``); the
functions they are built from keep the seed's names so a reader finds them.
"""
