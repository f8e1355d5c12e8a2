"""The project's own Asterisk lab: a Debian sid chroot running Asterisk 22 as the
`MojaCentrala` PBX, with baresip soft phones 101-104, all on 127.0.0.1.

    from cloudpbx.lab import Lab
    lab = Lab()                 # root: CLOUDPBX_LAB_ROOT or /var/lib/cloudpbx-lab/root
    lab.up()                    # builds once (debootstrap + apt-get), starts, waits
    host, port = lab.ami_address
    lab.phone(101).dial(102)
    lab.recordings_dir          # MixMonitor `<uniqueid>.wav` files
    lab.down()

Needs root on Debian. See docs/lab.md.
"""

from cloudpbx.lab.ami import AmiClient, AmiError
from cloudpbx.lab.build import host_mirror
from cloudpbx.lab.errors import LabBuildError, LabError, LabProcessError
from cloudpbx.lab.lab import Lab, LabStatus
from cloudpbx.lab.phone import Phone, PhoneError
from cloudpbx.lab.settings import (
    DEFAULT_ROOT,
    EXTENSIONS,
    PHONES,
    TENANT,
    LabSettings,
    default_root,
    endpoint,
    phone_ctrl_port,
    phone_sip_port,
)

__all__ = [
    "DEFAULT_ROOT",
    "EXTENSIONS",
    "PHONES",
    "TENANT",
    "AmiClient",
    "AmiError",
    "Lab",
    "LabBuildError",
    "LabError",
    "LabProcessError",
    "LabSettings",
    "LabStatus",
    "Phone",
    "PhoneError",
    "default_root",
    "endpoint",
    "host_mirror",
    "phone_ctrl_port",
    "phone_sip_port",
]
