"""The lab's configuration files, rendered from `LabSettings`.

Asterisk files are laid over the package's pristine /etc/asterisk at every `up` (so the
running config is always exactly this, whatever was edited by hand). Phones get a baresip
config folder each.
"""

from __future__ import annotations

from cloudpbx.lab.settings import (
    AUTO_ANSWER,
    BUSY_AT_ONE,
    CONFERENCE,
    CONFERENCE_EXTEN,
    ECHO_EXTEN,
    EXTENSIONS,
    MOH_DIR,
    QUEUE,
    QUEUE_EXTEN,
    QUEUE_MEMBERS,
    RECORDINGS_DIR,
    STATE_DIR,
    TENANT,
    LabSettings,
    endpoint,
    password,
    phone_ctrl_port,
    phone_rtp_ports,
    phone_sip_port,
)

HEADER = "; Written by `cloudpbx lab up` (cloudpbx.lab.templates): edits are overwritten.\n"

NOLOAD = (
    # Network listeners and clients the lab does not use: nothing but 127.0.0.1 PJSIP/AMI.
    "chan_iax2.so",
    "pbx_dundi.so",
    "chan_unistim.so",
    "chan_mgcp.so",
    "chan_skinny.so",
    "chan_motif.so",
    "chan_ooh323.so",
    "chan_rtp.so",
    "chan_audiosocket.so",
    "chan_websocket.so",
    "res_xmpp.so",
    "res_hep.so",
    "res_hep_pjsip.so",
    "res_hep_rtcp.so",
    "res_stun_monitor.so",
    "res_resolver_unbound.so",
    "res_statsd.so",
    "res_snmp.so",
    "res_pktccops.so",
    "res_phoneprov.so",
    "res_pjsip_phoneprov_provider.so",
    "res_calendar.so",
    "res_calendar_caldav.so",
    "res_calendar_ews.so",
    "res_calendar_exchange.so",
    "res_calendar_icalendar.so",
    "res_config_ldap.so",
    "res_config_pgsql.so",
    "res_config_mysql.so",
    "res_config_odbc.so",
    "res_odbc.so",
    "res_aeap.so",
    "res_speech_aeap.so",
    "res_prometheus.so",
    "res_http_media_cache.so",
    "cdr_pgsql.so",
    "cdr_radius.so",
    "cdr_tds.so",
    "cel_pgsql.so",
    "cel_radius.so",
    "cel_tds.so",
    "cdr_odbc.so",
    "cel_odbc.so",
    # Sample dialplans that would add contexts of their own.
    "pbx_ael.so",
    "pbx_lua.so",
    # Hardware and desktop audio.
    "chan_dahdi.so",
    "chan_console.so",
    "chan_alsa.so",
    "chan_oss.so",
    "res_smdi.so",
)


def asterisk_files(s: LabSettings) -> dict[str, str]:
    """File name (in /etc/asterisk) -> content."""
    return {
        "modules.conf": _modules(),
        "manager.conf": _manager(s),
        "http.conf": HEADER + "[general]\nenabled=no\n",
        "pjsip.conf": _pjsip(s),
        "rtp.conf": HEADER + f"[general]\nrtpstart={s.rtp_start}\nrtpend={s.rtp_end}\n",
        "extensions.conf": _extensions(),
        "queues.conf": _queues(),
        "confbridge.conf": _confbridge(),
        "cdr.conf": _cdr(),
        "cdr_manager.conf": HEADER + "[general]\nenabled=yes\n",
        "logger.conf": _logger(),
        "musiconhold.conf": _musiconhold(),
    }


def _modules() -> str:
    lines = [HEADER, "[modules]", "autoload=yes"]
    lines += [f"noload => {name}" for name in NOLOAD]
    return "\n".join(lines) + "\n"


def _manager(s: LabSettings) -> str:
    return (
        HEADER
        + f"""[general]
enabled=yes
port={s.ami_port}
bindaddr={s.host}
displayconnects=no

[{s.ami_user}]
secret={s.ami_secret}
deny=0.0.0.0/0.0.0.0
permit=127.0.0.1/255.255.255.255
read=all
write=all
writetimeout=5000
"""
    )


def _pjsip(s: LabSettings) -> str:
    out = [
        HEADER,
        f"""[global]
type=global
user_agent=CloudPBX lab ({TENANT})

[transport-udp]
type=transport
protocol=udp
bind={s.host}:{s.sip_port}
""",
    ]
    for ext in EXTENSIONS:
        name = endpoint(ext)
        busy_at = 1 if ext in BUSY_AT_ONE else 0
        out.append(
            f"""[{name}]
type=endpoint
context={TENANT}
disallow=all
allow=ulaw,alaw
auth={name}
aors={name}
callerid="{TENANT} {ext}" <{ext}>
accountcode={TENANT}
direct_media=no
rtp_symmetric=yes
media_address={s.host}
bind_rtp_to_media_address=yes
device_state_busy_at={busy_at}

[{name}]
type=auth
auth_type=userpass
username={name}
password={password(ext)}

[{name}]
type=aor
max_contacts=1
remove_existing=yes
qualify_frequency=15
"""
        )
    return "\n".join(out)


def _extensions() -> str:
    hints = "\n".join(f"exten => {ext},hint,PJSIP/{endpoint(ext)}" for ext in EXTENSIONS)
    low, high = min(EXTENSIONS) % 10, max(EXTENSIONS) % 10
    return (
        HEADER
        + f"""[general]
static=yes
writeprotect=yes
clearglobalvars=yes

[globals]

[{TENANT}]
; Hints: ExtensionStatus / DeviceStateChange for every extension.
{hints}

; Phone to phone. DIALTIMEOUT (a channel variable, e.g. from Originate) overrides 20 s.
exten => _10[{low}-{high}],1,NoOp({TENANT}: call to ${{EXTEN}})
 same => n,Set(CDR(userfield)={TENANT})
 same => n,MixMonitor(${{UNIQUEID}}.wav)
 same => n,Set(LAB_TIMEOUT=${{IF($[${{LEN(${{DIALTIMEOUT}})}} > 0]?${{DIALTIMEOUT}}:20)}})
 same => n,Dial(PJSIP/{TENANT}-${{EXTEN}},${{LAB_TIMEOUT}})
 same => n,Hangup()

; Queue {QUEUE}: static members {", ".join(str(m) for m in QUEUE_MEMBERS)}.
exten => {QUEUE_EXTEN},1,NoOp({TENANT}: queue {QUEUE})
 same => n,Set(CDR(userfield)={TENANT})
 same => n,Answer()
 same => n,MixMonitor(${{UNIQUEID}}.wav)
 same => n,Queue({QUEUE},r,,,120)
 same => n,Hangup()

; Conference room {CONFERENCE}.
exten => {CONFERENCE_EXTEN},1,NoOp({TENANT}: conference {CONFERENCE})
 same => n,Set(CDR(userfield)={TENANT})
 same => n,Answer()
 same => n,ConfBridge({CONFERENCE},lab_bridge,lab_user)
 same => n,Hangup()

; Echo test.
exten => {ECHO_EXTEN},1,NoOp({TENANT}: echo)
 same => n,Set(CDR(userfield)={TENANT})
 same => n,Answer()
 same => n,Echo()
 same => n,Hangup()
"""
    )


def _queues() -> str:
    members = "\n".join(
        f"member => PJSIP/{endpoint(m)},0,Agent {i},PJSIP/{endpoint(m)}"
        for i, m in enumerate(QUEUE_MEMBERS, start=1)
    )
    return (
        HEADER
        + f"""[general]
persistentmembers=no
shared_lastcall=yes

[{QUEUE}]
strategy=ringall
timeout=15
retry=2
ringinuse=no
joinempty=yes
leavewhenempty=no
announce-frequency=0
periodic-announce-frequency=0
{members}
"""
    )


def _confbridge() -> str:
    return (
        HEADER
        + """[general]

[lab_bridge]
type=bridge
max_members=20

[lab_user]
type=user
; No core sound files are installed: no prompts at all.
quiet=yes
announce_only_user=no
announce_user_count=no
"""
    )


def _cdr() -> str:
    return (
        HEADER
        + """[general]
enable=yes
unanswered=yes
congestion=yes

[csv]
usegmtime=yes
loguniqueid=yes
loguserfield=yes
accountlogs=yes
"""
    )


def _musiconhold() -> str:
    """A `default` class, as every real PBX has: without one Asterisk plays nothing to a
    held party and logs `Music class default requested but no musiconhold loaded`."""
    return HEADER + f"[general]\n\n[default]\nmode=files\ndirectory={MOH_DIR}\n"


def _logger() -> str:
    return (
        HEADER
        + """[general]
queue_log=yes
dateformat=%F %T.%3q

[logfiles]
messages.log => notice,warning,error,verbose(3)
"""
    )


PLAYER_SINK = "lab-sink"
"""The phones' audio player: an aubridge device that no audio source ever joins.

baresip 1.1.0's `aufile` player starts a thread that sets its own `run` flag; when the
player is replaced before that thread first runs (every SDP update: answer, hold, resume;
likelier on a loaded machine) the destructor skips the join, frees the state, and the
thread then calls a NULL write handler (`segfault at 0 ip 0`). aubridge starts its thread
only when a source joins the same device, so this player never has one: what a phone hears
is discarded (Asterisk's MixMonitor records both sides anyway).
"""


def phone_dir(ext: int) -> str:
    """Inside the chroot: the baresip config folder of a phone."""
    return f"{STATE_DIR}/phones/{ext}"


def phone_files(s: LabSettings, ext: int) -> dict[str, str]:
    """File name (in the phone's folder) -> content: baresip `config` and `accounts`."""
    folder = phone_dir(ext)
    rtp_low, rtp_high = phone_rtp_ports(ext)
    answermode = "auto" if ext in AUTO_ANSWER else "manual"
    config = f"""# Written by `cloudpbx lab up`: phone {ext} of {TENANT}.
poll_method		epoll
sip_listen		{s.host}:{phone_sip_port(ext)}
sip_trans_def		udp
net_interface		{s.host}
call_local_timeout	120
call_max_calls		1

audio_player		aubridge,{PLAYER_SINK}
audio_source		aufile,{folder}/{ext}.wav
audio_alert		aubridge,{PLAYER_SINK}
ausrc_srate		8000
auplay_srate		8000
ausrc_channels		1
auplay_channels		1
audio_level		no

rtp_tos			0
rtp_ports		{rtp_low}-{rtp_high}
rtcp_mux		no
jitter_buffer_type	fixed
jitter_buffer_delay	2-10
rtp_stats		no

module_path		/usr/lib/baresip/modules
module			g711.so
module			aufile.so
module			aubridge.so
module_app		account.so
module_app		menu.so
module_app		ctrl_tcp.so

ctrl_tcp_listen		{s.host}:{phone_ctrl_port(ext)}
"""
    aor = f"sip:{endpoint(ext)}@{s.host}:{s.sip_port};transport=udp"
    accounts = (
        f"<{aor}>;auth_user={endpoint(ext)};auth_pass={password(ext)};"
        f"answermode={answermode};regint=300;audio_codecs=PCMU,PCMA\n"
    )
    return {"config": config, "accounts": accounts}


def resolv_conf() -> str:
    """The chroot's private /etc/resolv.conf: no DNS server but loopback (none runs there)."""
    return "# cloudpbx lab: nothing is resolved through the network\nnameserver 127.0.0.1\n"


def recordings_dir() -> str:
    return RECORDINGS_DIR
