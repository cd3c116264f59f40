"""Virtual machines: the seed's VM_helper, VM_disk, VM_snapshot, VM_clone, VM_utilization.

Each operation is a task handler (registered on import of ``baadal.vm.handlers``); the
functions they are built from keep the seed's names so a reader finds them.
"""
