"""`cloudpbx client ...`: the CloudPBX API from the command line (docs/client.md).

Connection settings, highest precedence first: flags (`--url`, `--key`, `--pbx`,
`--ws-url`), environment (`CLOUDPBX_URL`, `CLOUDPBX_KEY`, `CLOUDPBX_PBX`,
`CLOUDPBX_WS_URL`), the TOML file named by `--config`/`CLOUDPBX_CLIENT_CONFIG`, else
`$XDG_CONFIG_HOME/cloudpbx/client.toml` (`~/.config/...`) when it exists.

Exit codes: 0 done; 1 other API error; 2 usage or configuration error; 3 key refused
(401/403); 4 not found; 5 request refused as malformed (400); 6 action refused (dial
`Action Error`, SMS gateway failure); 7 network, server or protocol error; 8 incomplete
(a day over the server's cap, or downloads that failed); 130 interrupted.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import json
import logging
import os
import sys
import time
import tomllib
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import typer
from rich.console import Console, Group
from rich.live import Live
from rich.measure import Measurement
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table
from rich.text import Text

from cloudpbx.client import (
    ActionError,
    APIError,
    AsyncClient,
    AuthError,
    BadRequest,
    Client,
    CloudPBXError,
    Event,
    Forbidden,
    NotFound,
    PbxState,
    ProtocolError,
    Recording,
    RetryPolicy,
    ServerError,
    SmsError,
    TransportError,
    TruncatedError,
    describe,
    device_label,
    member_label,
    sms_label,
)

T = TypeVar("T")

EXIT_API = 1
EXIT_USAGE = 2
EXIT_AUTH = 3
EXIT_NOT_FOUND = 4
EXIT_BAD_REQUEST = 5
EXIT_REFUSED = 6
EXIT_UNAVAILABLE = 7
EXIT_INCOMPLETE = 8
EXIT_INTERRUPTED = 130

app = typer.Typer(
    help="Client for a CloudPBX API 1.3 server: call records, recordings, transcriptions, "
    "dial, SMS and live events.",
    no_args_is_help=True,
    add_completion=False,
)
record_app = typer.Typer(help="Recordings: download one, or sync a date range to a folder.")
sms_app = typer.Typer(help="SMS through the PBX's gateway.")
app.add_typer(record_app, name="record", no_args_is_help=True)
app.add_typer(sms_app, name="sms", no_args_is_help=True)


class Format(StrEnum):
    table = "table"
    json = "json"
    csv = "csv"
    ndjson = "ndjson"


class Lang(StrEnum):
    en = "en"
    pl = "pl"


# -- settings -------------------------------------------------------------------------------


def default_config_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "cloudpbx" / "client.toml"


@dataclass
class Settings:
    """The resolved connection settings of one invocation."""

    url: str | None
    key: str | None
    pbx: str | None
    ws_url: str | None
    timeout: float
    retries: int

    def _options(self) -> dict[str, Any]:
        return {
            "pbx": self.pbx,
            "ws_url": self.ws_url,
            "timeout": self.timeout,
            "retry": RetryPolicy(attempts=self.retries),
        }

    def _require(self) -> tuple[str, str]:
        if not self.url:
            _usage("no API URL: pass --url, set CLOUDPBX_URL, or put url in the config file")
        if not self.key:
            _usage("no API key: pass --key, set CLOUDPBX_KEY, or put key in the config file")
        return self.url, self.key

    def client(self) -> Client:
        url, key = self._require()
        return Client(url, key, **self._options())

    def async_client(self) -> AsyncClient:
        url, key = self._require()
        return AsyncClient(url, key, **self._options())

    def require_pbx(self) -> str:
        if not self.pbx:
            _usage("no PBX name: pass --pbx, set CLOUDPBX_PBX, or put pbx in the config file")
        return self.pbx


def _load_config(path: Path | None) -> dict[str, Any]:
    explicit = path is not None
    path = path or default_config_path()
    if not path.is_file():
        if explicit:
            _usage(f"config file {path} does not exist")
        return {}
    try:
        with path.open("rb") as handle:
            values = tomllib.load(handle)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        _usage(f"cannot read config file {path}: {exc}")
    unknown = set(values) - {"url", "key", "pbx", "ws_url", "timeout", "retries"}
    if unknown:
        _usage(f"config file {path}: unknown settings {', '.join(sorted(unknown))}")
    return values


@app.callback()
def main(
    ctx: typer.Context,
    url: Annotated[
        str | None, typer.Option("--url", envvar="CLOUDPBX_URL", help="API address")
    ] = None,
    key: Annotated[
        str | None, typer.Option("--key", envvar="CLOUDPBX_KEY", help="API key", show_default=False)
    ] = None,
    pbx: Annotated[
        str | None,
        typer.Option("--pbx", envvar="CLOUDPBX_PBX", help="PBX name (for events)"),
    ] = None,
    ws_url: Annotated[
        str | None,
        typer.Option(
            "--ws-url", envvar="CLOUDPBX_WS_URL", help="WebSocket address (default: --url)"
        ),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            envvar="CLOUDPBX_CLIENT_CONFIG",
            help="TOML file with url, key, pbx, ws_url, timeout, retries "
            "(default ~/.config/cloudpbx/client.toml)",
        ),
    ] = None,
    timeout: Annotated[float | None, typer.Option(help="Seconds per request [30]")] = None,
    retries: Annotated[
        int | None,
        typer.Option(min=0, help="Retries of reads after network errors and 5xx [3]"),
    ] = None,
) -> None:
    """Flags win over CLOUDPBX_* variables, which win over the config file."""
    file = _load_config(config)
    ctx.obj = Settings(
        url=url or file.get("url"),
        key=key or file.get("key"),
        pbx=pbx or file.get("pbx"),
        ws_url=ws_url or file.get("ws_url"),
        timeout=float(timeout or file.get("timeout") or 30.0),
        retries=int(retries if retries is not None else file.get("retries", 3)),
    )


# -- errors and output ----------------------------------------------------------------------


def _stderr() -> Console:
    return Console(stderr=True, highlight=False, soft_wrap=True)


def _usage(message: str) -> NoReturn:
    _stderr().print(f"[red]error:[/red] {message}")
    raise typer.Exit(EXIT_USAGE)


def exit_code(exc: CloudPBXError) -> int:
    """The documented exit code of a client exception."""
    codes: list[tuple[type[CloudPBXError], int]] = [
        (AuthError, EXIT_AUTH),
        (Forbidden, EXIT_AUTH),
        (NotFound, EXIT_NOT_FOUND),
        (BadRequest, EXIT_BAD_REQUEST),
        (ActionError, EXIT_REFUSED),
        (SmsError, EXIT_REFUSED),
        (ServerError, EXIT_UNAVAILABLE),
        (TransportError, EXIT_UNAVAILABLE),
        (ProtocolError, EXIT_UNAVAILABLE),
        (TruncatedError, EXIT_INCOMPLETE),
        (APIError, EXIT_API),
    ]
    return next((code for cls, code in codes if isinstance(exc, cls)), EXIT_API)


def _run(action: Callable[[], T]) -> T:
    """Run a command body: client errors become `error: ...` on stderr and an exit code."""
    try:
        return action()
    except CloudPBXError as exc:
        _stderr().print(f"[red]error:[/red] {exc}", markup=True, highlight=False)
        raise typer.Exit(exit_code(exc)) from None
    except ValueError as exc:  # bad dates and ids, caught before any request
        _usage(str(exc))
    except KeyboardInterrupt:
        raise typer.Exit(EXIT_INTERRUPTED) from None


def _settings(ctx: typer.Context) -> Settings:
    settings = ctx.obj
    assert isinstance(settings, Settings)
    return settings


CDR_FIELDS = [
    "calldate",
    "clid",
    "src",
    "dst",
    "channel",
    "dstchannel",
    "lastapp",
    "duration",
    "billsec",
    "disposition",
    "uniqueid",
    "cost",
    "zone",
]
CDR_TABLE = ["calldate", "src", "dst", "lastapp", "disposition", "duration", "billsec", "cost"]
RECORDING_FIELDS = ["uniqueid", "src", "dst", "format", "date"]
TRANSCRIPTION_FIELDS = ["uniqueid", "calldate", "src", "dst"]


def print_whole(console: Console, table: Table) -> None:
    """Print a table with every value whole on one line, wider than the terminal if it must.

    Decision: a date, a number or a uniqueid folded over three lines (what a narrow
    terminal made of a squeezed column) cannot be read, copied or grepped; a line the
    terminal wraps, or `less -S` scrolls, still can.
    """
    unbounded = console.options.update_width(100_000)
    console.width = max(console.width, Measurement.get(console, unbounded, table).maximum)
    console.print(table)


def write_rows(
    rows: Iterable[Mapping[str, Any]],
    fmt: Format,
    fields: list[str],
    table_fields: list[str] | None = None,
    title: str = "",
) -> int:
    """Print rows (the server's objects) as a table, a JSON array, CSV or NDJSON.

    JSON, CSV and NDJSON are streamed, so a month of calls needs no memory; CSV columns are
    the contract's, then any extra fields of the first row.
    """
    out = sys.stdout
    count = 0
    if fmt is Format.table:
        table = Table(title=title or None, show_lines=False)
        columns = [*(table_fields or fields), "uniqueid"] if table_fields else fields
        for name in dict.fromkeys(columns):
            table.add_column(name, no_wrap=True)
        for row in rows:
            table.add_row(*(str(row.get(name, "")) for name in dict.fromkeys(columns)))
            count += 1
        print_whole(Console(highlight=False), table)
        return count
    if fmt is Format.json:
        out.write("[")
        for row in rows:
            out.write(",\n " if count else "\n ")
            out.write(json.dumps(row, ensure_ascii=False))
            count += 1
        out.write("\n]\n" if count else "]\n")
        return count
    if fmt is Format.ndjson:
        for row in rows:
            out.write(json.dumps(row, ensure_ascii=False) + "\n")
            count += 1
        return count
    writer: csv.DictWriter[str] | None = None
    for row in rows:
        if writer is None:
            header = [*fields, *(name for name in row if name not in fields)]
            writer = csv.DictWriter(out, header, extrasaction="ignore", lineterminator="\n")
            writer.writeheader()
        writer.writerow(dict(row))
        count += 1
    if writer is None:
        csv.writer(out, lineterminator="\n").writerow(fields)
    return count


def _raw(rows: Iterable[Any]) -> Iterator[Mapping[str, Any]]:
    for row in rows:
        yield row.raw


FromOption = Annotated[
    str | None,
    typer.Option("--from", "-f", help="First day: YYYY-MM-DD, today, yesterday (default today)"),
]
ToOption = Annotated[
    str | None, typer.Option("--to", "-t", help="Last day, inclusive (default today)")
]
FormatOption = Annotated[Format, typer.Option("--format", "-F", help="Output format")]


# -- REST commands --------------------------------------------------------------------------


@app.command()
def cdr(
    ctx: typer.Context,
    start: FromOption = None,
    stop: ToOption = None,
    fmt: FormatOption = Format.table,
    split: Annotated[
        bool,
        typer.Option(help="Split ranges over the server's cap into several requests"),
    ] = True,
) -> None:
    """Call records (CDR) of a date range, oldest first; the whole range, whatever its size."""

    def body() -> None:
        with _settings(ctx).client() as client:
            if split:
                write_rows(_raw(client.iter_cdr(start, stop)), fmt, CDR_FIELDS, CDR_TABLE, "CDR")
                return
            page = client.cdr(start, stop)
            write_rows(_raw(page), fmt, CDR_FIELDS, CDR_TABLE, "CDR")
            if page.truncated:
                _stderr().print(
                    f"[yellow]warning:[/yellow] only the first {len(page)} of "
                    f"{page.total or 'more'} rows (the server's cap); drop --no-split"
                )
                raise typer.Exit(EXIT_INCOMPLETE)

    _run(body)


@app.command()
def recordings(
    ctx: typer.Context,
    start: FromOption = None,
    stop: ToOption = None,
    fmt: FormatOption = Format.table,
) -> None:
    """Recorded calls of a date range (download them with `record get` or `record sync`)."""

    def body() -> None:
        with _settings(ctx).client() as client:
            rows = _raw(client.iter_recordings(start, stop))
            write_rows(rows, fmt, RECORDING_FIELDS, title="Recordings")

    _run(body)


@app.command()
def transcriptions(
    ctx: typer.Context,
    start: FromOption = None,
    stop: ToOption = None,
    fmt: FormatOption = Format.table,
) -> None:
    """Calls of a date range whose transcription is finished."""

    def body() -> None:
        with _settings(ctx).client() as client:
            rows = _raw(client.iter_transcriptions(start, stop))
            write_rows(rows, fmt, TRANSCRIPTION_FIELDS, title="Transcriptions")

    _run(body)


@app.command()
def transcription(
    ctx: typer.Context,
    uniqueid: Annotated[str, typer.Argument(help="Call id, e.g. 1639563902.75")],
    json_output: Annotated[bool, typer.Option("--json", help="The server's JSON object")] = False,
) -> None:
    """The text and summary of one call."""

    def body() -> None:
        with _settings(ctx).client() as client:
            found = client.transcription(uniqueid)
        if json_output:
            print(json.dumps(dict(found.raw), ensure_ascii=False, indent=2))
            return
        console = Console(highlight=False)
        console.print(f"[bold]{found.uniqueid}[/bold]")
        console.print(f"[bold]Summary:[/bold] {found.summary}", markup=True)
        console.print()
        console.print(found.content, markup=False)

    _run(body)


def _progress() -> Progress:
    """Progress bars on stderr, only on a terminal (scripts get no control characters)."""
    console = Console(stderr=True)
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
        disable=not console.is_terminal,
    )


@record_app.command("get")
def record_get(
    ctx: typer.Context,
    uniqueid: Annotated[str, typer.Argument(help="Call id")],
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="File or folder (default: ./UNIQUEID.FORMAT)"),
    ] = None,
    resume: Annotated[bool, typer.Option(help="Continue an earlier FILE.part")] = True,
) -> None:
    """Download one recording, with a progress bar; resumes an interrupted download."""

    def body() -> None:
        with _settings(ctx).client() as client, _progress() as progress:
            task = progress.add_task(uniqueid, total=None)

            def update(done: int, total: int | None) -> None:
                progress.update(task, completed=done, total=total)

            result = client.download_recording(
                uniqueid, output or Path.cwd(), progress=update, resume=resume
            )
        resumed = f", resumed at {result.resumed_from}" if result.resumed_from else ""
        print(f"{result.path}\t{result.size} bytes{resumed}")

    _run(body)


@dataclass
class SyncReport:
    downloaded: int = 0
    present: int = 0
    failed: int = 0
    listed: int = 0


async def sync_recordings(
    client: AsyncClient,
    rows: list[Recording],
    folder: Path,
    parallel: int,
    progress: Progress | None,
    errors: Console,
) -> SyncReport:
    """Download every recording of `rows` that is not yet complete in `folder`."""
    report = SyncReport(listed=len(rows))
    missing: list[Recording] = []
    for row in rows:
        if Path(row.filename).name != row.filename or row.filename in (".", ".."):
            report.failed += 1  # a name that would land outside the folder
            errors.print(f"[red]failed:[/red] unsafe file name {row.filename!r}")
        elif (folder / row.filename).is_file():
            report.present += 1
        else:
            missing.append(row)
    overall: TaskID | None = None
    if progress is not None:
        overall = progress.add_task("all", total=len(missing))
    gate = asyncio.Semaphore(max(1, parallel))

    async def one(row: Recording) -> None:
        async with gate:
            task = progress.add_task(row.uniqueid, total=None) if progress else None

            def update(done: int, total: int | None) -> None:
                if progress is not None and task is not None:
                    progress.update(task, completed=done, total=total)

            try:
                await client.download_recording(
                    row.uniqueid, folder / row.filename, progress=update
                )
                report.downloaded += 1
            except CloudPBXError as exc:
                report.failed += 1
                errors.print(f"[red]failed:[/red] {row.uniqueid}: {exc}")
            finally:
                if progress is not None and task is not None:
                    progress.remove_task(task)
                if progress is not None and overall is not None:
                    progress.advance(overall)

    await asyncio.gather(*(one(row) for row in missing))
    return report


@record_app.command("sync")
def record_sync(
    ctx: typer.Context,
    folder: Annotated[Path, typer.Argument(help="Folder to fill (created if missing)")],
    start: FromOption = None,
    stop: ToOption = None,
    parallel: Annotated[int, typer.Option("--parallel", "-j", min=1, max=32)] = 4,
) -> None:
    """Download every recording of a date range that FOLDER lacks, in parallel.

    Files are named UNIQUEID.FORMAT like the provider's sample; a download that was cut
    off leaves UNIQUEID.FORMAT.part, which the next run continues.
    """

    def body() -> SyncReport:
        settings = _settings(ctx)
        folder.mkdir(parents=True, exist_ok=True)
        with settings.client() as client:
            rows = list(client.iter_recordings(start, stop))

        async def download() -> SyncReport:
            async with settings.async_client() as client:
                with _progress() as progress:
                    return await sync_recordings(
                        client, rows, folder, parallel, progress, _stderr()
                    )

        return asyncio.run(download())

    report = _run(body)
    print(
        f"{report.listed} recordings: {report.downloaded} downloaded, "
        f"{report.present} already present, {report.failed} failed"
    )
    if report.failed:
        raise typer.Exit(EXIT_INCOMPLETE)


@app.command()
def dial(
    ctx: typer.Context,
    cpa: Annotated[str, typer.Argument(help="Extension that rings first")],
    cpb: Annotated[str, typer.Argument(help="Number it is then connected to")],
) -> None:
    """Ring extension CPA; once it answers, call CPB. Prints OK (exit 0) or fails (exit 6)."""

    def body() -> None:
        with _settings(ctx).client() as client:
            result = client.dial(cpa, cpb)
        print("OK" + (f"\t{result.originate_id}" if result.originate_id else ""))

    _run(body)


@sms_app.command("send")
def sms_send(
    ctx: typer.Context,
    to: Annotated[str, typer.Argument(help="Mobile number: 9 digits, or 48/+48 + 9 digits")],
    body_text: Annotated[str, typer.Argument(metavar="BODY", help="1 to 1,024 characters")],
    test: Annotated[bool, typer.Option("--test", help="Not delivered, not charged")] = False,
    json_output: Annotated[bool, typer.Option("--json", help="The server's JSON object")] = False,
) -> None:
    """Send an SMS; prints its id (the CDR uniqueid and later MsgId) and status."""

    def body() -> None:
        with _settings(ctx).client() as client:
            answer = client.send_sms(to, body_text, test=test)
        if json_output:
            print(json.dumps(dict(answer.raw), ensure_ascii=False))
        else:
            print(f"{answer.response_id}\t{answer.response_status}")

    _run(body)


# -- events ---------------------------------------------------------------------------------

_STATE_STYLE = {0: "green", 1: "yellow", 2: "red", 4: "dim", 8: "bold magenta", 16: "cyan"}
_MEMBER_STYLE = {1: "green", 2: "yellow", 3: "red", 5: "dim", 6: "bold magenta", 8: "cyan"}


def event_line(event_id: int, event: Event, lang: Lang, pbx: str | None) -> Text:
    """`12:00:01  #386  subscriber  101: Ringing ↔ 600100200 (Jan)`, coloured by state."""
    style = ""
    status = getattr(event, "status", None)
    if isinstance(status, int):
        style = _STATE_STYLE.get(status, "")
        if event.type == "qmember":
            style = _MEMBER_STYLE.get(status, "")
    line = Text(f"{datetime.now():%H:%M:%S}  ", style="dim")
    line.append(f"#{event_id:<6} ", style="dim")
    line.append(f"{event.type:<16}", style="bold")
    line.append(describe(event, lang.value, pbx), style=style)
    return line


_WRAPPING = frozenset(
    {"Peer", "Rozmówca", "Name", "Nazwa", "Paused", "Pauza", "Members", "Uczestnicy"}
)
"""The watch view's free-text columns: they wrap in a narrow terminal, so the numbers,
states and times of the others stay whole."""


def render_state(state: PbxState, lang: Lang, now: float | None = None) -> Group:
    """The watch view: extensions, queues, agents, conferences, recent SMS."""
    moment = time.time() if now is None else now
    pl = lang is Lang.pl
    ext = Table(title="Numery wewnętrzne" if pl else "Extensions", expand=True)
    for name in ("Numer", "Stan", "Rozmówca", "Od") if pl else ("Ext", "State", "Peer", "For"):
        ext.add_column(name, no_wrap=name not in _WRAPPING)
    for number in sorted(state.extensions, key=lambda n: (len(n), n)):
        view = state.extensions[number]
        peer = view.connected_number or ""
        if view.connected_name:
            peer += f" ({view.connected_name})"
        since = int(max(0.0, moment - view.since))
        ext.add_row(
            number,
            Text(device_label(view.status, lang.value), style=_STATE_STYLE.get(view.status, "")),
            peer,
            f"{since // 60}:{since % 60:02d}",
        )
    queues = Table(title="Kolejki" if pl else "Queues", expand=True)
    for name in ("Kolejka", "Oczekujące") if pl else ("Queue", "Waiting"):
        queues.add_column(name, no_wrap=True)
    for queue in sorted(state.queues):
        queues.add_row(queue, str(state.queues[queue]))
    agents = Table(title="Agenci" if pl else "Agents", expand=True)
    headers = ("Kolejka", "Agent", "Nazwa", "Stan", "Pauza", "Odebrane")
    for name in headers if pl else ("Queue", "Agent", "Name", "State", "Paused", "Taken"):
        agents.add_column(name, no_wrap=name not in _WRAPPING)
    for (queue, _peer), member in sorted(state.agents.items(), key=lambda item: item[0]):
        paused = ("tak" if pl else "yes") if member.paused else ""
        if member.paused and member.reason:
            paused += f" ({member.reason})"
        agents.add_row(
            queue,
            member.extension,
            member.name,
            Text(
                member_label(member.status, lang.value), style=_MEMBER_STYLE.get(member.status, "")
            ),
            paused,
            str(member.calls_taken),
        )
    rooms = Table(title="Konferencje" if pl else "Conferences", expand=True)
    for name in ("Pokój", "Uczestnicy") if pl else ("Room", "Members"):
        rooms.add_column(name, no_wrap=name not in _WRAPPING)
    for room in sorted(state.conferences):
        members = state.conferences[room].values()
        rooms.add_row(
            room, ", ".join(f"{m.caller_id_name} <{m.caller_id_num}>".strip() for m in members)
        )
    parts: list[Table | Text] = [ext, queues, agents, rooms]
    if state.sms:
        sms = Table(title="SMS", expand=True)
        for name in ("MsgId", "Do" if pl else "To", "Stan" if pl else "Status"):
            sms.add_column(name, no_wrap=True)
        for message in reversed(state.sms.values()):
            sms.add_row(message.msg_id, message.to, sms_label(message.status, lang.value))
        parts.append(sms)
    last = state.last_event_id if state.last_event_id is not None else "-"
    parts.append(Text(f"#{last}  ({state.events_seen} events)", style="dim"))
    return Group(*parts)


@app.command()
def events(
    ctx: typer.Context,
    json_output: Annotated[
        bool, typer.Option("--json", help='One JSON object per event: {"id","type","event"}')
    ] = False,
    watch: Annotated[
        bool, typer.Option("--watch", "-w", help="A live table of extensions, queues, agents")
    ] = False,
    lang: Annotated[Lang, typer.Option(help="Language of state names")] = Lang.en,
    since: Annotated[
        int | None,
        typer.Option(help="Resume after this event id (0: all the server still keeps)"),
    ] = None,
    count: Annotated[int | None, typer.Option(min=1, help="Stop after this many events")] = None,
) -> None:
    """The PBX's live events; reconnects and resumes by itself. Stop with Ctrl-C."""
    settings = _settings(ctx)
    pbx = settings.require_pbx()

    def body() -> None:
        with (
            _reconnect_notices(),
            settings.client() as client,
            client.events(pbx, last_event_id=since) as stream,
        ):
            console = Console(highlight=False, soft_wrap=True)
            if watch and console.is_terminal:
                _watch(stream, lang, pbx, count)
                return
            state = PbxState(pbx=pbx) if watch and not json_output else None
            if state is not None:
                _stderr().print(
                    "not a terminal: one line per event (the live table needs a terminal)"
                )
            for seen, (event_id, event) in enumerate(stream, start=1):
                if json_output:
                    record = {"id": event_id, "type": event.type, "event": dict(event.raw)}
                    sys.stdout.write(json.dumps(record, ensure_ascii=False) + "\n")
                    sys.stdout.flush()
                else:
                    console.print(event_line(event_id, event, lang, pbx))
                    console.file.flush()
                if state is not None:
                    state.apply(event, event_id)
                if count is not None and seen >= count:
                    break
            if state is not None:  # the table once, as the events left it
                console.print(render_state(state, lang))

    _run(body)


@contextlib.contextmanager
def _reconnect_notices() -> Iterator[None]:
    """Show the stream's reconnects and gaps on stderr while `events` runs."""
    logger = logging.getLogger("cloudpbx.client")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
    previous = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous)


def _watch(stream: Iterable[tuple[int, Event]], lang: Lang, pbx: str, count: int | None) -> None:
    state = PbxState(pbx=pbx)
    console = Console()
    with Live(render_state(state, lang), console=console, auto_refresh=False) as live:
        for seen, (event_id, event) in enumerate(stream, start=1):
            state.apply(event, event_id)
            live.update(render_state(state, lang), refresh=True)
            if count is not None and seen >= count:
                break


if __name__ == "__main__":
    app()
