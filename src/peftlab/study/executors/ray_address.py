"""Whether the Ray cluster a study names answers, and lets this driver in, asked in seconds before Ray connects.

``ray.init`` retries an address where nothing listens for about 14 minutes (Ray 2.60: 823 s, some 60 lines of
connection warnings, then an error naming another address), and a head with token authentication (Ray 2.60's
default for ``ray start --head``) refuses a driver without the token for 20 s of "InvalidAuthToken" lines, none of
which says authentication or ``RAY_AUTH_MODE``. ``check_address`` connects to the address itself (``CONNECT_SECONDS``)
and asks it what ``ray.init`` would ask first (a cluster's GCS, ``host:port``: its cluster id; a Ray Client
server, ``ray://host:port``: a ping), with the driver's token where Ray would send one (``RAY_AUTH_MODE=token``,
``driver_token``): each refusal one line naming the flag (or ``$RAY_ADDRESS``) and the cause. With
``RAY_USE_TLS`` the address is only connected to.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from pathlib import Path

from peftlab.study.executors.ray_tasks import check_available, named_address
from peftlab.utils.errors import UserError

CONNECT_SECONDS = 5.0  # a TCP connection, then the GCS's answer: a cluster on a network answers in well under this
TOKEN_HELP = "https://docs.ray.io/en/latest/ray-security/token-auth.html"


def check_ready(options) -> None:
    """``ray_tasks.check_available``'s line; then whether the named cluster answers and lets the driver in."""
    check_available(options)
    check_address(options)


def check_address(options) -> None:
    """A UserError line, within seconds, when nothing answers at the named address or its head refuses this driver
    (token authentication); nothing for a local Ray, ``auto`` (Ray looks for one on this machine) or a cluster
    that answers."""
    flag, address = named_address(options)
    if address is None or address in ("local", "auto"):
        return
    client = address.startswith("ray://")
    host, port = split_address(flag, address.removeprefix("ray://"), 10001 if client else 6379)
    why = unreachable(host, port)
    if why is not None:
        raise UserError(
            f"{flag}: nothing answers there ({why}); start a cluster with `ray start --head` and give its address"
        )
    if os.environ.get("RAY_USE_TLS", "0").lower() in ("0", "", "false"):
        why = refusal(f"[{host}]:{port}" if ":" in host else f"{host}:{port}", client)
        if why is not None:
            raise UserError(f"{flag}: {why}")


def split_address(flag: str, address: str, default_port: int) -> tuple[str, int]:
    """``host:port`` (an IPv6 host in brackets) as (host, port); a bare host gets Ray's port."""
    host, colon, port = address.rpartition(":") if address.count(":") == 1 or "]:" in address else ("", "", "")
    if not colon:
        host, port = address, str(default_port)
    host = host.strip("[]")
    if ":" in host:  # only an IPv6 address holds colons
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            host = ""
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise UserError(f"{flag} is invalid: expected host:port, e.g. 10.0.0.1:6379 (or ray://host:10001)")
    return host, int(port)


def unreachable(host: str, port: int) -> str | None:
    """Why a TCP connection to ``host:port`` fails within ``CONNECT_SECONDS`` (refused, timed out, no such host)."""
    try:
        with socket.create_connection((host, port), timeout=CONNECT_SECONDS):
            return None
    except socket.gaierror as err:
        return f"cannot resolve {host}: {err.strerror}"
    except TimeoutError:
        return f"no answer in {CONNECT_SECONDS:.0f} s"
    except OSError as err:
        return err.strerror or type(err).__name__


def driver_token() -> str | None:
    """The token ``ray.init`` sends with ``RAY_AUTH_MODE=token``: ``$RAY_AUTH_TOKEN``, else the file
    ``$RAY_AUTH_TOKEN_PATH``, else ``~/.ray/auth_token``; "" where none is found. None in any other mode: to an
    address it is given, Ray sends no token then, whatever file exists."""
    if os.environ.get("RAY_AUTH_MODE", "").lower() != "token":
        return None
    if os.environ.get("RAY_AUTH_TOKEN", "").strip():
        return os.environ["RAY_AUTH_TOKEN"].strip()
    path = Path(os.environ.get("RAY_AUTH_TOKEN_PATH") or Path.home() / ".ray" / "auth_token")
    try:
        return path.read_text(encoding="utf-8").strip()
    except OSError:
        return ""


def refusal(address: str, client: bool) -> str | None:
    """Why the GCS (or, ``client``, the Ray Client server) at ``address`` refuses this driver (one line naming
    ``RAY_AUTH_MODE`` where authentication is the cause), or is no Ray cluster; None when it answers as it would
    to ``ray.init``."""
    import grpc
    from ray.core.generated import gcs_service_pb2, gcs_service_pb2_grpc, ray_client_pb2, ray_client_pb2_grpc

    token = driver_token()
    if token == "":
        return (
            "RAY_AUTH_MODE=token, but this driver has no token: set RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or "
            f"~/.ray/auth_token to the cluster's (`ray get-auth-token` on its head; {TOKEN_HELP})"
        )
    metadata = [("authorization", f"Bearer {token}")] if token else []
    with grpc.insecure_channel(address) as channel:
        if client:
            ask = ray_client_pb2_grpc.RayletDriverStub(channel).ClusterInfo
            request = ray_client_pb2.ClusterInfoRequest(type=ray_client_pb2.ClusterInfoType.PING)
        else:
            ask = gcs_service_pb2_grpc.NodeInfoGcsServiceStub(channel).GetClusterId
            request = gcs_service_pb2.GetClusterIdRequest()
        try:
            ask(request, timeout=CONNECT_SECONDS, metadata=metadata)
            return None
        except grpc.RpcError as err:
            code, details = err.code(), (err.details() or "").splitlines()
    if code == grpc.StatusCode.UNAUTHENTICATED and token:
        return (
            f"the Ray cluster refuses this driver's token (RAY_AUTH_MODE=token): give it the cluster's ({TOKEN_HELP})"
        )
    if code == grpc.StatusCode.UNAUTHENTICATED:
        return (
            "the Ray cluster requires token authentication (Ray's default for `ray start --head`) and this driver "
            "sends no token: set RAY_AUTH_MODE=token with the cluster's token (RAY_AUTH_TOKEN, or "
            "`ray get-auth-token` on its head), or start the head with RAY_AUTH_MODE=disabled"
        )
    what = "its Ray Client server" if client else "its GCS"
    return f"no Ray cluster answers there ({what}: {code.name}: {details[0] if details else 'no details'})"
