"""`cloudpbx lab`: the project's Asterisk lab (build, up, down, status, phones). Needs root."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from cloudpbx.lab import AmiError, Lab, LabError, PhoneError
from cloudpbx.lab.phone import strip_ansi
from cloudpbx.lab.record import SCENARIOS
from cloudpbx.lab.record import record as record_scenario
from cloudpbx.lab.settings import (
    AUTO_ANSWER,
    CONFERENCE,
    CONFERENCE_EXTEN,
    ECHO_EXTEN,
    EXTENSIONS,
    PHONES,
    QUEUE,
    QUEUE_EXTEN,
    ROOT_ENV,
    endpoint,
    phone_ctrl_port,
)

app = typer.Typer(
    help="A real Asterisk PBX (MojaCentrala) with soft phones, on 127.0.0.1. Needs root on Debian.",
    no_args_is_help=True,
    add_completion=False,
)
console = Console(soft_wrap=True, highlight=False)
errors = Console(stderr=True, soft_wrap=True)

RootOption = Annotated[
    Path | None,
    typer.Option(
        "--root",
        envvar=ROOT_ENV,
        help="The lab's chroot (default /var/lib/cloudpbx-lab/root)",
        show_default=False,
    ),
]
MirrorOption = Annotated[
    str | None,
    typer.Option(
        "--mirror",
        envvar="CLOUDPBX_LAB_MIRROR",
        help="Debian mirror for debootstrap (default: the host's apt mirror)",
        show_default=False,
    ),
]


def _log(line: str) -> None:
    errors.print(f"[dim]{escape(line)}[/dim]")


def _fail(exc: Exception) -> typer.Exit:
    errors.print(f"[red]error:[/red] {escape(str(exc))}")
    return typer.Exit(1)


@app.command()
def build(root: RootOption = None, mirror: MirrorOption = None) -> None:
    """Build the chroot (debootstrap sid + asterisk, baresip...) unless already built."""
    lab = Lab(root, mirror=mirror, log=_log)
    started = time.monotonic()
    try:
        done = lab.build()
    except LabError as exc:
        raise _fail(exc) from None
    if done:
        console.print(f"built {lab.root} in {time.monotonic() - started:.0f} s")
    else:
        console.print(f"already built: {lab.root}")


@app.command()
def up(
    root: RootOption = None,
    ami_port: Annotated[int | None, typer.Option(help="AMI port [default: 5038]")] = None,
    ami_secret: Annotated[
        str | None,
        typer.Option(envvar="CLOUDPBX_LAB_AMI_SECRET", help="AMI secret of user `api`"),
    ] = None,
    sip_port: Annotated[int | None, typer.Option(help="PJSIP UDP port [default: 5160]")] = None,
    mirror: MirrorOption = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for boot/registration")] = 60,
) -> None:
    """Build if needed, start Asterisk and phones 101-104, wait until they are registered."""
    try:
        lab = Lab(
            root,
            ami_port=ami_port,
            ami_secret=ami_secret,
            sip_port=sip_port,
            mirror=mirror,
            log=_log,
        )
        started = lab.up(timeout=timeout)
    except (LabError, AmiError, ValueError) as exc:
        raise _fail(exc) from None
    host, port = lab.ami_address
    if not started:
        host, port = Lab(lab.root).ami_address  # the running lab's, whatever was asked
        console.print(f"the lab is already up (AMI {host}:{port}); nothing to do")
        return
    t = lab.timings
    console.print(
        f"lab up in {t.get('up', 0):.1f} s (asterisk boot {t.get('asterisk_boot', 0):.1f} s, "
        f"phones {t.get('phones', 0):.1f} s)"
    )
    console.print(f"AMI        {host}:{port}  user {lab.settings.ami_user}")
    console.print(f"SIP        {lab.sip_address[0]}:{lab.sip_address[1]} (UDP)")
    console.print(f"recordings {lab.recordings_dir}")


@app.command()
def down(root: RootOption = None) -> None:
    """Stop the phones and Asterisk; nothing of the lab keeps running."""
    lab = Lab(root, log=_log)
    try:
        stopped = lab.down()
    except (LabError, OSError) as exc:
        raise _fail(exc) from None
    console.print("lab down" if stopped else "the lab was not running")


@app.command()
def status(
    root: RootOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable")] = False,
) -> None:
    """Built? Running? Extension states, ports, recordings folder. Exit 3 when not up."""
    lab = Lab(root)
    st = lab.status()
    if as_json:
        data = {
            "root": str(st.root),
            "built": st.built,
            "up": st.up,
            "asterisk_pid": st.asterisk_pid,
            "phone_pids": {str(k): v for k, v in st.phone_pids.items()},
            "phone_restarts": {str(k): v for k, v in st.phone_restarts.items()},
            "ami": f"{st.ami_address[0]}:{st.ami_address[1]}",
            "ami_ok": st.ami_ok,
            "sip": f"{st.sip_address[0]}:{st.sip_address[1]}",
            "extension_states": {str(k): v for k, v in sorted(st.extension_states.items())},
            "recordings_dir": str(st.recordings_dir),
            "build": st.build_info,
        }
        console.print_json(json.dumps(data))
    else:
        state = "up" if st.up else "partly up" if st.asterisk_pid else "down"
        console.print(f"lab        {state} ({'built' if st.built else 'not built'}: {st.root})")
        if st.build_info:
            info = st.build_info
            console.print(
                f"versions   asterisk {info.get('asterisk')}, baresip {info.get('baresip')}"
            )
        ami_state = "ok" if st.ami_ok else "not answering" if st.asterisk_pid else "-"
        console.print(
            f"asterisk   pid {st.asterisk_pid or '-'}; AMI {_addr(st.ami_address)} {ami_state}"
        )
        console.print(f"SIP        {_addr(st.sip_address)} (UDP)")
        console.print(f"recordings {st.recordings_dir}")
        table = Table("ext", "endpoint", "phone pid", "ctrl_tcp", "state", "role")
        for ext in EXTENSIONS:
            pid = st.phone_pids.get(ext)
            table.add_row(
                str(ext),
                endpoint(ext),
                str(pid) if pid else "-",
                str(phone_ctrl_port(ext)) if ext in PHONES else "-",
                st.extension_states.get(ext, "-"),
                _role(ext),
            )
        console.print(table)
        restarted = [f"{ext}: {n}" for ext, n in st.phone_restarts.items() if n]
        console.print(
            "restarts   "
            + (", ".join(restarted) + " (crashed phones the lab started again; see their logs)")
            if restarted
            else "restarts   none (no phone crashed since `up`)"
        )
        console.print(
            f"also       {QUEUE_EXTEN} queue {QUEUE}, {CONFERENCE_EXTEN} ConfBridge {CONFERENCE}, "
            f"{ECHO_EXTEN} echo"
        )
    if not st.up:
        raise typer.Exit(3)


@app.command()
def phone(
    ext: Annotated[int, typer.Argument(help="Phone: 101-104")],
    command: Annotated[str, typer.Argument(help="dial, hangup, hold, resume, reginfo, accept...")],
    params: Annotated[str | None, typer.Argument(help="e.g. the number to dial")] = None,
    root: RootOption = None,
) -> None:
    """Send one ctrl_tcp command to a phone (`cloudpbx lab phone 101 dial 102`)."""
    lab = Lab(root)
    if ext not in PHONES:
        raise _fail(ValueError(f"no phone runs for {ext} (phones: {', '.join(map(str, PHONES))})"))
    try:
        with lab.phone(ext) as controller:
            reply = controller.command(command, params)
    except PhoneError as exc:
        raise _fail(exc) from None
    data = strip_ansi(str(reply.get("data") or "")).rstrip()
    if data:
        console.print(escape(data), highlight=False)
    if not reply.get("ok"):
        errors.print(f"[red]{command}: not ok[/red]")
        raise typer.Exit(1)


@app.command()
def call(
    caller: Annotated[int, typer.Argument(help="Calling phone: 101-104")],
    number: Annotated[str, typer.Argument(help="What it dials: 102, 500, 600, 700...")],
    seconds: Annotated[float, typer.Option(help="Talk time before the caller hangs up")] = 5,
    root: RootOption = None,
) -> None:
    """Make a call from a phone, talk, hang up; print the CDR and the recording."""
    lab = Lab(root)
    if caller not in PHONES:
        raise _fail(ValueError(f"no phone runs for {caller}"))
    try:
        with lab.ami(events="cdr") as ami, lab.phone(caller) as ph:
            ph.drain()
            reply = ph.dial(number)
            if not reply.get("ok"):
                raise PhoneError(f"dial {number}: {reply.get('data')}")
            event = ph.wait_event(
                lambda m: m.get("type") in ("CALL_ESTABLISHED", "CALL_CLOSED"), 30
            )
            if event.get("type") == "CALL_CLOSED":
                console.print(f"call closed: {escape(str(event.get('param', '')))}")
            else:
                console.print(f"{caller} -> {number}: established, talking {seconds:g} s")
                time.sleep(seconds)
                ph.hangup()
                ph.wait_event("CALL_CLOSED", 10)
                console.print("hung up")
            cdr = ami.wait_event("Cdr", 10)
    except (LabError, AmiError, PhoneError) as exc:
        raise _fail(exc) from None
    keys = ("Source", "Destination", "Disposition", "Duration", "BillableSeconds", "UniqueID")
    console.print("CDR        " + ", ".join(f"{k}={cdr.get(k, '')}" for k in keys))
    wav = lab.recordings_dir / f"{cdr.get('UniqueID', '')}.wav"
    if wav.exists():
        console.print(f"recording  {wav} ({wav.stat().st_size} bytes)")


@app.command()
def record(
    scenarios: Annotated[
        list[str], typer.Argument(help=f"Scenarios: {', '.join(SCENARIOS)}", show_default=False)
    ],
    out: Annotated[Path, typer.Option(help="Folder for the transcript files")] = Path("."),
    root: RootOption = None,
) -> None:
    """Record AMI transcripts of scenarios (`<name>.txt`, `.sent.txt`, `.jsonl`, `.cdr.csv`)."""
    lab = Lab(root, log=_log)
    unknown = [name for name in scenarios if name not in SCENARIOS]
    if unknown:
        raise _fail(ValueError(f"no scenario {', '.join(unknown)} (see --help)"))
    if not lab.is_up():
        raise _fail(LabError("the lab is not up: `cloudpbx lab up` first"))
    try:
        for name in scenarios:
            notes = record_scenario(lab, name, out)
            console.print(f"{name}: {out / name}.txt  " + "; ".join(notes))
    except (LabError, AmiError, PhoneError) as exc:
        raise _fail(exc) from None
    finally:
        lab.close()


def _addr(address: tuple[str, int]) -> str:
    return f"{address[0]}:{address[1]}"


def _role(ext: int) -> str:
    if ext in AUTO_ANSWER:
        return "answers, speaks"
    if ext in PHONES:
        return "rings, never answers"
    return "never registered"


if __name__ == "__main__":
    app()
