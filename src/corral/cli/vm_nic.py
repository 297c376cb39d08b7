"""``corral vm nic``: a VM's network interfaces: list, show, add (hot-plug), update, remove;
and the ``--nic PG[:KEY=VALUE,...]`` mini-syntax of ``corral vm create``."""

from __future__ import annotations

from collections.abc import Callable
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, Any

import typer

from corral.cli.common import NoWait, finish, names_of, show, state_of
from corral.cli.output import Column, emit_json, print_table

if TYPE_CHECKING:
    from corral.api.nics import Nic
    from corral.sdk import Client, Operation

app = typer.Typer(
    help="A VM's network interfaces (NICs): each on a port group, with its addresses, security"
    " groups, default policies, spoofing protection and bandwidth limits.",
    no_args_is_help=True,
)


class Policy(StrEnum):
    """``corral.api.nics.Policy`` (not imported: the CLI starts without loading pydantic)."""

    allow = "allow"
    deny = "deny"


class NicModel(StrEnum):
    """``corral.api.nics.NicModelName``."""

    virtio = "virtio"
    e1000 = "e1000"
    rtl8139 = "rtl8139"


NIC_SYNTAX = (
    "A NIC on port group PG (name or id), repeatable (in device order), optionally with"
    " KEY=VALUE settings after a colon. Keys: ip (static addresses), subnet (one address from"
    " each; 'none': no address; default: one from every subnet of PG), sg (security groups, in"
    " evaluation order), pair (CIDR or CIDR@MAC the guest may also send as): several values"
    " joined by '+'; model (virtio, e1000, rtl8139), mac, ingress and egress (allow or deny:"
    " the default policies), spoof (on or off: spoofing protection), in and out (kbit/s into"
    " and from the guest). E.g. --nic web-pg, --nic web-pg:ip=10.0.0.5,sg=web+ssh,model=e1000."
)

_LIST_KEYS = {"ip": "ips", "subnet": "subnets", "sg": "security_groups", "pair": "allowed_pairs"}
_TEXT_KEYS = {
    "model": "model",
    "mac": "mac",
    "ingress": "ingress_default",
    "egress": "egress_default",
}
_KBPS_KEYS = {"in": "inbound_kbps", "out": "outbound_kbps"}
_SWITCH_KEYS = {"spoof": "spoof_check"}
_KEYS = (*_LIST_KEYS, *_TEXT_KEYS, *_KBPS_KEYS, *_SWITCH_KEYS)
_ON = {"on": True, "yes": True, "true": True, "off": False, "no": False, "false": False}


def parse_pair(text: str, *, hint: str = "--allowed-pair") -> dict[str, str]:
    """``CIDR[@MAC]`` -> the ``AllowedPair`` fields (no ``mac``: the NIC's own MAC)."""
    cidr, at, mac = (part.strip() for part in text.partition("@"))
    if not cidr or (at and not mac):
        raise typer.BadParameter(f"{text!r}: expected CIDR or CIDR@MAC", param_hint=hint)
    return {"cidr": cidr, "mac": mac} if mac else {"cidr": cidr}


def nic_spec(text: str) -> dict[str, Any]:
    """``PG[:KEY=VALUE,...]`` (``NIC_SYNTAX``) -> the ``NicCreate`` fields. Only the syntax is
    checked here (``typer.BadParameter``); the values are checked by the SDK and the server."""

    def bad(why: str) -> typer.BadParameter:
        return typer.BadParameter(f"{text!r}: {why}", param_hint="--nic")

    port_group, _, rest = text.partition(":")
    if not port_group.strip():
        raise bad("expected PG[:KEY=VALUE,...]")
    spec: dict[str, Any] = {"port_group": port_group.strip()}
    for item in (i.strip() for i in rest.split(",")):
        if not item:
            continue
        key, eq, value = (part.strip() for part in item.partition("="))
        key = key.lower()
        if not eq:
            raise bad(f"{item!r} is not KEY=VALUE")
        if key not in _KEYS:
            raise bad(f"unknown key {key!r} (keys: {', '.join(_KEYS)})")
        if not value:
            raise bad(f"{key} needs a value")
        if key in _LIST_KEYS:
            _add_values(spec, key, value, bad)
            continue
        field = _TEXT_KEYS.get(key) or _KBPS_KEYS.get(key) or _SWITCH_KEYS[key]
        if field in spec:
            raise bad(f"{key} given twice")
        if key in _TEXT_KEYS:
            spec[field] = value
        elif key in _KBPS_KEYS:
            if not value.isdigit():
                raise bad(f"{key}={value}: expected kbit/s, a whole number")
            spec[field] = int(value)
        else:
            if value.lower() not in _ON:
                raise bad(f"{key}={value}: expected on or off")
            spec[field] = _ON[value.lower()]
    return spec


def _add_values(
    spec: dict[str, Any], key: str, value: str, bad: Callable[[str], typer.BadParameter]
) -> None:
    """Append the ``+``-joined ``value`` to the list field of ``key`` (``subnet=none``: [])."""
    field = _LIST_KEYS[key]
    values: list[Any] = [v.strip() for v in value.split("+") if v.strip()]
    none = [v.lower() == "none" for v in values]
    if key == "subnet" and (any(none) or spec.get(field) == []):
        if spec.get(field) or none != [True]:
            raise bad("subnet=none with other subnets")
        spec[field] = []
        return
    if key == "pair":
        values = [parse_pair(v, hint="--nic") for v in values]
    spec.setdefault(field, []).extend(values)


VmArg = Annotated[str, typer.Argument(help="VM name or id.", show_default=False)]
NicArg = Annotated[
    str, typer.Argument(help="NIC id, MAC or device number (0: the first).", show_default=False)
]
SecurityGroups = Annotated[
    list[str] | None,
    typer.Option(
        "--security-group",
        "-g",
        metavar="GROUP",
        help="A security group (name or id), repeatable: evaluated in the order given.",
    ),
]
AllowedPairs = Annotated[
    list[str] | None,
    typer.Option(
        "--allowed-pair",
        metavar="CIDR[@MAC]",
        help="More the guest may send as (default MAC: the NIC's own), repeatable; e.g. a"
        " VRRP address.",
    ),
]


def _policy_option(flag: str, what: str, default: str | None) -> Any:
    """``--ingress-default`` / ``--egress-default`` (``default``: shown in the help)."""
    tail = f" (default: {default})" if default else ""
    return typer.Option(
        flag,
        case_sensitive=False,
        help=f"What {what} when no rule matches{tail}.",
        show_default=False,
    )


Ingress = Annotated[Policy | None, _policy_option("--ingress-default", "comes in", None)]
Egress = Annotated[Policy | None, _policy_option("--egress-default", "goes out", None)]


def _joined(values: list[str], names: dict[str, str] | None = None) -> str | None:
    names = names or {}
    return ",".join(names.get(v, v) for v in values) or None


def nic_columns(pg_names: dict[str, str], group_names: dict[str, str]) -> list[Column]:
    """The ``vm nic list`` table (port groups and security groups by name where known)."""
    return [
        ("DEVICE", lambda n: n.device),
        ("ID", lambda n: n.id),
        ("PORT GROUP", lambda n: pg_names.get(n.port_group_id, n.port_group_id)),
        ("MAC", lambda n: n.mac),
        ("MODEL", lambda n: n.model),
        ("IPS", lambda n: _joined(n.ips)),
        ("GROUPS", lambda n: _joined(n.security_groups, group_names)),
    ]


@app.command("list")
def list_nics(ctx: typer.Context, vm: VmArg) -> None:
    """List a VM's NICs in device order (GROUPS: its security groups, in evaluation order)."""
    state = state_of(ctx)
    client = state.client()
    nics = client.vm_nics.list(vm)
    if state.json:
        emit_json(nics)
        return
    if not nics:
        typer.echo(f"VM {vm} has no NICs.")
        return
    pg_names = names_of(client.port_groups, {n.port_group_id for n in nics})
    group_names = names_of(client.security_groups, {g for n in nics for g in n.security_groups})
    print_table(nics, nic_columns(pg_names, group_names))


@app.command("show")
def show_nic(ctx: typer.Context, vm: VmArg, nic: NicArg) -> None:
    """Show a NIC: its addresses, security groups (ids, in order), policies, limits and its
    Open vSwitch port on the host."""
    state = state_of(ctx)
    show(state, state.client().vm_nics.get(vm, nic))


@app.command("add")
def add(
    ctx: typer.Context,
    vm: VmArg,
    port_group: Annotated[
        str, typer.Option("--port-group", "-p", help="Port group name or id.", show_default=False)
    ],
    subnet: Annotated[
        list[str] | None,
        typer.Option(
            "--subnet",
            "-s",
            help="Get one address from this subnet (repeatable; default: one from every subnet"
            " of the port group).",
        ),
    ] = None,
    no_address: Annotated[
        bool, typer.Option("--no-address", help="Get no address (no --subnet, no --ip).")
    ] = False,
    ip: Annotated[
        list[str] | None,
        typer.Option("--ip", help="A static address in a subnet of the port group (repeatable)."),
    ] = None,
    model: Annotated[
        NicModel, typer.Option("--model", "-m", case_sensitive=False, help="Device model.")
    ] = NicModel.virtio,
    mac: Annotated[
        str | None,
        typer.Option("--mac", help="A locally administered MAC (default: generated, 02:…)."),
    ] = None,
    security_group: SecurityGroups = None,
    ingress_default: Annotated[
        Policy, _policy_option("--ingress-default", "comes in", "deny")
    ] = Policy.deny,
    egress_default: Annotated[
        Policy, _policy_option("--egress-default", "goes out", "allow")
    ] = Policy.allow,
    no_spoof_check: Annotated[
        bool,
        typer.Option(
            "--no-spoof-check",
            help="Let the guest send from any MAC and address (routers, appliances).",
        ),
    ] = False,
    allowed_pair: AllowedPairs = None,
    inbound_kbps: Annotated[
        int | None, typer.Option("--inbound-kbps", help="Limit into the guest, kbit/s.")
    ] = None,
    outbound_kbps: Annotated[
        int | None, typer.Option("--outbound-kbps", help="Limit from the guest, kbit/s.")
    ] = None,
    no_wait: NoWait = False,
) -> None:
    """Add a NIC to a VM as its next device (hot-plugged when it runs); its addresses are
    allocated at once."""
    if no_address and (subnet or ip):
        raise typer.BadParameter("--no-address with --subnet/--ip", param_hint="--no-address")
    state = state_of(ctx)
    client = state.client()
    op = client.vm_nics.add(
        vm,
        port_group,
        subnets=[] if no_address else (subnet or None),
        ips=ip or [],
        model=model.value,
        mac=mac,
        security_groups=security_group or [],
        ingress_default=ingress_default.value,
        egress_default=egress_default.value,
        spoof_check=not no_spoof_check,
        allowed_pairs=[parse_pair(p) for p in allowed_pair or []],
        inbound_kbps=inbound_kbps,
        outbound_kbps=outbound_kbps,
    )
    finish(state, op, no_wait=no_wait, done=lambda o: _added(client, vm, o))


def describe(nic: Nic) -> str:
    """``02:…:01, 10.0.0.5 fd00::5`` (``no address`` when it has none)."""
    return f"{nic.mac}, {' '.join(nic.ips) or 'no address'}"


def _added(client: Client, vm: str, op: Operation) -> str:
    if op.target_id is None:
        return f"NIC added to VM {vm}."
    nic = client.vm_nics.get(vm, op.target_id)  # the operation's target is the new NIC
    return f"NIC {nic.device} of VM {vm} added ({nic.id}): {describe(nic)}."


@app.command("update")
def update(
    ctx: typer.Context,
    vm: VmArg,
    nic: NicArg,
    security_group: SecurityGroups = None,
    no_security_groups: Annotated[
        bool, typer.Option("--no-security-groups", help="Remove every security group.")
    ] = False,
    ingress_default: Ingress = None,
    egress_default: Egress = None,
    spoof_check: Annotated[
        bool | None,
        typer.Option(
            "--spoof-check/--no-spoof-check",
            help="Turn spoofing protection on or off.",
            show_default=False,
        ),
    ] = None,
    allowed_pair: AllowedPairs = None,
    no_allowed_pairs: Annotated[
        bool, typer.Option("--no-allowed-pairs", help="Remove every allowed address pair.")
    ] = False,
    no_wait: NoWait = False,
) -> None:
    """Change a NIC's policy, applied to its host at once (connections the new policy still
    allows survive). --security-group replaces the whole list (in the order given);
    --allowed-pair likewise."""
    if security_group and no_security_groups:
        raise typer.BadParameter(
            "--security-group with --no-security-groups", param_hint="--no-security-groups"
        )
    if allowed_pair and no_allowed_pairs:
        raise typer.BadParameter(
            "--allowed-pair with --no-allowed-pairs", param_hint="--no-allowed-pairs"
        )
    groups = [] if no_security_groups else security_group or None
    pairs = [] if no_allowed_pairs else [parse_pair(p) for p in allowed_pair or []] or None
    changes = (groups, ingress_default, egress_default, spoof_check, pairs)
    if all(change is None for change in changes):
        raise typer.BadParameter(
            "nothing to change: give --security-group, --no-security-groups,"
            " --ingress-default, --egress-default, --[no-]spoof-check, --allowed-pair or"
            " --no-allowed-pairs",
            param_hint="options",
        )
    state = state_of(ctx)
    op = state.client().vm_nics.update(
        vm,
        nic,
        security_groups=groups,
        ingress_default=None if ingress_default is None else ingress_default.value,
        egress_default=None if egress_default is None else egress_default.value,
        spoof_check=spoof_check,
        allowed_pairs=pairs,
    )
    finish(state, op, no_wait=no_wait, done=f"NIC {nic} of VM {vm} updated.")


@app.command("remove")
def remove(
    ctx: typer.Context,
    vm: VmArg,
    nic: NicArg,
    timeout: Annotated[
        float | None,
        typer.Option(
            "--timeout",
            min=0,
            max=600,
            help="Seconds the guest gets to release the NIC (server default 30).",
            show_default=False,
        ),
    ] = None,
    no_wait: NoWait = False,
) -> None:
    """Unplug a NIC from a VM and return its addresses (the other NICs keep their device
    numbers)."""
    state = state_of(ctx)
    op = state.client().vm_nics.remove(vm, nic, timeout=timeout)
    finish(state, op, no_wait=no_wait, done=f"NIC {nic} removed from VM {vm}.")
