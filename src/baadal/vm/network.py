"""A VM's place on the network around it (the seed's VM_network and VM_security_domain):
its DHCP reservation and its public IP mapping on the NAT box.

Every change follows the same order: the database says which addresses the VM holds (one
short transaction), then the DHCP server and the NAT box are told, outside any
transaction. Both are idempotent, so a re-run or a compensation repeats them safely.
Changes and restores hold :func:`baadal.vm.common.network_lock` from the database to the
last write, so a restore never writes back what a concurrent change just removed.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass

from sqlalchemy import Engine, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from baadal import address_pools
from baadal import constants as C
from baadal.config import Settings
from baadal.db.models import VM, PrivateIpPool, SecurityDomain
from baadal.db.session import session_scope
from baadal.drivers import domain_xml
from baadal.drivers.base import Hypervisor
from baadal.errors import BaadalError, ConflictError, NotFoundError, user_message
from baadal.gcpause import paused_gc
from baadal.net import dhcp, nat_box
from baadal.tasks.registry import TaskContext, TaskResult, handler
from baadal.vm import nat as vm_nat
from baadal.vm.common import graceful_stop, load_vm, log_vm_event, network_lock, vm_hypervisor

log = logging.getLogger("baadal")

DOMAIN_CHANGED = "Edited security domain successfully."
#: how a failed security-domain move ended
_UNDONE, _COMPLETED, _FAILED = "undone", "completed", "failed"


@dataclass(frozen=True)
class VmNetwork:
    """What the DHCP server and the NAT box must know about one VM."""

    vm_id: int
    dhcp: dhcp.DhcpEntry | None
    public: nat_box.PublicIpMapping | None


def vm_dhcp_entry(vm: VM) -> dhcp.DhcpEntry | None:
    """The reservation for a VM, or None when it has no private IP with a MAC."""
    pool = vm.private_ip
    if pool is None or not pool.mac_addr:
        return None
    return dhcp.DhcpEntry(dhcp.dhcp_name(vm.vm_identity), pool.mac_addr, pool.private_ip)


def dhcp_entries_from_db(session: Session) -> list[dhcp.DhcpEntry]:
    """Every VM's reservation, by VM id (see :func:`baadal.net.dhcp.vm_entries`), made
    with the collector paused: 25,000 rows and entries hold no cycles, and a full
    collection in their midst was 0.2 of a 0.5 s rebuild (see baadal.gcpause)."""
    with paused_gc():
        rows = session.execute(
            select(VM.vm_identity, PrivateIpPool.mac_addr, PrivateIpPool.private_ip)
            .join(PrivateIpPool, VM.private_ip_id == PrivateIpPool.id)
            .where(PrivateIpPool.mac_addr.is_not(None))
            .order_by(VM.id)
        )
        return dhcp.vm_entries(rows)


def vm_network(vm: VM) -> VmNetwork:
    public = None
    if vm.public_ip is not None and vm.private_ip is not None:
        public = nat_box.PublicIpMapping(vm.public_ip.public_ip, vm.private_ip.private_ip)
    return VmNetwork(vm.id, vm_dhcp_entry(vm), public)


def publish(settings: Settings, net: VmNetwork) -> None:
    """Reserve the VM's address in DHCP and map its public IP (before it boots)."""
    if net.dhcp is not None:
        dhcp.create_dhcp_entry(settings, net.dhcp.name, net.dhcp.mac, net.dhcp.ip)
    if net.public is not None:
        nat_box.create_mapping(settings, net.public)


def withdraw(settings: Settings, net: VmNetwork) -> None:
    """The reverse of :func:`publish`."""
    if net.public is not None:
        nat_box.remove_mapping(settings, net.public)
    if net.dhcp is not None:
        dhcp.remove_dhcp_entry(settings, net.dhcp.name, net.dhcp.mac, net.dhcp.ip)


def read_vm_network(engine: Engine, vm_id: int | None) -> VmNetwork:
    with session_scope(engine) as session:
        return vm_network(load_vm(session, vm_id))


def withdraw_vm_network(engine: Engine, settings: Settings, vm_id: int | None) -> None:
    """Everything the VM has on the DHCP server and the NAT box, console grants included
    (before its addresses go back to the pools)."""
    withdraw(settings, read_vm_network(engine, vm_id))
    if vm_id is not None:
        vm_nat.remove_vnc_mapping_from_nat(engine, settings, vm_id)


def withdraw_quietly(engine: Engine, settings: Settings, vm_id: int | None) -> None:
    """On a failure path: try, log what did not work, never hide the first error."""
    try:
        withdraw_vm_network(engine, settings, vm_id)
    except (BaadalError, OSError):
        log.exception("could not withdraw the network of VM %s", vm_id)


def set_portgroup_in_vm(
    hv: Hypervisor, name: str, *, mac: str, vlan_tag: int, portgroup: str | None
) -> None:
    """Rewrite the NIC of the persistent definition: MAC, VLAN tag (bridge NICs) or
    portgroup (libvirt network NICs). A running VM sees it at its next boot."""
    xml = hv.xml(name, inactive=True, secure=True)
    hv.define(
        domain_xml.set_portgroup_or_vlan(xml, mac=mac, portgroup=portgroup, vlan_tag=vlan_tag)
    )


def restore_network(engine: Engine, settings: Settings) -> str:
    """Make the DHCP server and the NAT box say what the database says again: rebuild the
    reservations when the file was lost or drifted, re-add missing NAT mappings (after a
    NAT box reboot), remove mappings no VM holds. Cheap when all is well; run at worker
    start and every few minutes. Under :func:`network_lock`: a VM deleted meanwhile is
    either in the picture read here and gone after, or gone before it is read."""
    with network_lock(settings):
        dhcp_state = "DHCP not managed"
        if dhcp.managed(settings):  # else there is nothing to compare: no database read
            dhcp_state = "DHCP in step"
            with session_scope(engine) as session:
                wanted = dhcp_entries_from_db(session)
            if set(dhcp.read_dhcp_entries(settings)) != set(wanted):  # outside the transaction
                count = dhcp.rebuild_dhcp_entries(settings, wanted)
                dhcp_state = f"DHCP rebuilt with {count} entries"
        readded = vm_nat.reapply_nat_mappings(engine, settings)
    return f"{dhcp_state}; NAT: {readded} rule(s)/alias(es) re-added"


@handler(C.TaskType.NETWORK_SANITY, periodic=("vnc_expiry",))
def network_sanity(ctx: TaskContext) -> TaskResult:
    """The periodic network job: revoke timed-out VNC grants, then restore_network."""
    ended = vm_nat.clear_all_timedout_vnc_mappings(ctx.engine, ctx.settings)
    state = restore_network(ctx.engine, ctx.settings)
    return TaskResult.success(f"{ended} expired VNC grant(s) revoked; {state}")


# --- security domains ----------------------------------------------------------------


@dataclass(frozen=True)
class _Move:
    old_pool_id: int | None
    old_domain_id: int | None
    old_net: VmNetwork
    new_net: VmNetwork
    new_mac: str
    new_vlan_tag: int
    new_portgroup: str
    old_mac: str | None
    old_vlan_tag: int | None
    old_portgroup: str | None
    identity: str


def _take_new_address(session: Session, vm: VM, domain: SecurityDomain) -> _Move:
    """In one transaction: the old address goes back, one of the new domain is claimed."""
    old_net = vm_network(vm)
    old = vm.private_ip
    old_vlan = old.vlan if old is not None else None
    old_pool_id, old_domain_id = vm.private_ip_id, vm.security_domain_id
    address_pools.release_private_ip(session, vm.id)
    new = address_pools.get_private_ip_mac(session, vm.id, domain.id)
    vm.security_domain_id = domain.id
    session.flush()
    session.refresh(vm)
    return _Move(
        old_pool_id=old_pool_id,
        old_domain_id=old_domain_id,
        old_net=old_net,
        new_net=vm_network(vm),
        new_mac=new.mac_addr,
        new_vlan_tag=new.vlan_tag,
        new_portgroup=new.vlan_name,
        old_mac=old.mac_addr if old is not None else None,
        old_vlan_tag=old_vlan.vlan_tag if old_vlan is not None else None,
        old_portgroup=old_vlan.name if old_vlan is not None else None,
        identity=vm.vm_identity,
    )


def _set_nic(
    hv: Hypervisor, settings: Settings, name: str, mac: str, vlan_tag: int, portgroup: str | None
) -> None:
    set_portgroup_in_vm(
        hv, name, mac=mac, vlan_tag=vlan_tag,
        portgroup=portgroup if settings.network.libvirt_network else None,
    )  # fmt: skip


def _restart(hv: Hypervisor, name: str, settings: Settings) -> None:
    """A new MAC and VLAN reach the guest through a fresh boot (upstream: reboot)."""
    graceful_stop(hv, name, settings)
    hv.start(name)


def update_security_domain(
    engine: Engine, settings: Settings, vm_id: int, domain_id: int, requester_id: int | None
) -> str:
    """Move a VM to another security domain: new IP and MAC from the new domain's pool,
    DHCP and NAT updated, the NIC moved to the new VLAN, the old address released; a
    running VM reboots into its new network. On failure everything is put back."""
    with session_scope(engine) as session:
        vm = load_vm(session, vm_id)
        hv, identity, name = vm_hypervisor(vm), vm.vm_identity, vm.vm_name
    state = hv.domain_info(identity).status  # libvirt outside the transaction
    if state == C.VMStatus.SUSPENDED:
        # a reboot would lose the paused guest's memory
        raise ConflictError(f"{name} is paused: resume or stop it before moving it")
    was_running = state == C.VMStatus.RUNNING
    # a restore in between would write the old or the half-made picture back
    with network_lock(settings):
        with session_scope(engine) as session:
            vm = load_vm(session, vm_id)
            domain = session.get(SecurityDomain, domain_id)
            if domain is None:
                raise NotFoundError(f"no security domain with id {domain_id}")
            if vm.security_domain_id == domain.id:
                raise ConflictError(f"{vm.vm_name} is already in security domain {domain.name!r}")
            old_domain_name = vm.security_domain.name if vm.security_domain else None
            new_domain_name = domain.name
            move = _take_new_address(session, vm, domain)
        nic_changed = False
        try:
            withdraw(settings, move.old_net)
            publish(settings, move.new_net)
            _set_nic(
                hv, settings, move.identity, move.new_mac, move.new_vlan_tag, move.new_portgroup
            )
            nic_changed = True
            if was_running:
                _restart(hv, move.identity, settings)
        except Exception as exc:
            outcome = _undo_move(engine, settings, hv, vm_id, move, nic_changed=nic_changed)
            if was_running:
                with contextlib.suppress(BaadalError):
                    if outcome == _COMPLETED:
                        _restart(hv, move.identity, settings)  # into the new network
                    else:
                        hv.start(move.identity)  # back as it was, even if the reboot failed
            if outcome == _UNDONE:
                raise
            if outcome == _COMPLETED:
                new_ip = move.new_net.dhcp.ip if move.new_net.dhcp else "its new address"
                raise ConflictError(
                    f"{name} could not be moved cleanly ({user_message(exc)}), and its old"
                    f" address was taken meanwhile: it stays in {new_domain_name!r} with {new_ip}"
                ) from exc
            raise ConflictError(
                f"{name} could not be moved ({user_message(exc)}) nor put back: an admin must"
                " check its network (details in the log)"
            ) from exc
    with session_scope(engine) as session:
        vm = load_vm(session, vm_id)
        old_ip = move.old_net.dhcp.ip if move.old_net.dhcp else None
        new_ip = move.new_net.dhcp.ip if move.new_net.dhcp else None
        log_vm_event(session, vm, "security_domain", old_domain_name, new_domain_name, requester_id)
        log_vm_event(session, vm, "private_ip", old_ip, new_ip, requester_id)
    return DOMAIN_CHANGED


def _restore_old_address(engine: Engine, vm_id: int, move: _Move) -> bool:
    """Give the VM its old address and domain back in the database; False when that
    address is no longer free (another VM or a host took it, or it was deactivated)."""
    if move.old_pool_id is None:
        return False
    try:
        with session_scope(engine) as session:
            vm = load_vm(session, vm_id)
            address_pools.release_private_ip(session, vm.id)
            if not address_pools.private_ip_is_free(session, move.old_pool_id):
                session.rollback()
                return False
            vm.private_ip_id = move.old_pool_id
            vm.security_domain_id = move.old_domain_id
    except IntegrityError:  # claimed by a concurrent allocation a moment ago
        return False
    return True


def _undo_move(
    engine: Engine,
    settings: Settings,
    hv: Hypervisor,
    vm_id: int,
    move: _Move,
    *,
    nic_changed: bool,
) -> str:
    """Give the VM its old address, NIC and reservations back (_UNDONE). When the old
    address is no longer free the move is completed instead (_COMPLETED: new address,
    NIC and reservation kept together). _FAILED when neither worked (logged)."""
    with contextlib.suppress(BaadalError):
        withdraw(settings, move.new_net)
    try:
        if _restore_old_address(engine, vm_id, move):
            publish(settings, move.old_net)
            if nic_changed and move.old_mac is not None and move.old_vlan_tag is not None:
                _set_nic(hv, settings, move.identity, move.old_mac, move.old_vlan_tag,
                         move.old_portgroup)  # fmt: skip
            return _UNDONE
        log.warning("VM %s: its old address is no longer free, completing the move", vm_id)
        publish(settings, move.new_net)
        _set_nic(hv, settings, move.identity, move.new_mac, move.new_vlan_tag,
                 move.new_portgroup)  # fmt: skip
        return _COMPLETED
    except Exception:
        log.exception("VM %s could not be moved nor put back", vm_id)
        return _FAILED
