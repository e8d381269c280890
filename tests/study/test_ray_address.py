"""Whether a named Ray cluster answers and lets the driver in, asked before Ray connects (``ray_address``): a
closed port and a stand-in GCS (gRPC, the service ``ray.init`` asks first) that wants a token, each refusal one
line naming the flag and the cause, in well under a second. No Ray is started: test_executors.py's Ray tests go
through the same check to a real local Ray with its token."""

from __future__ import annotations

import os
import socket
import time
from concurrent import futures
from pathlib import Path

import pytest
from testkit import cpu_seconds

from peftlab.study.executors.executors import ExecutorOptions
from peftlab.study.executors.ray_address import check_address, split_address
from peftlab.utils.errors import UserError

pytest.importorskip("ray")
grpc = pytest.importorskip("grpc")
TOKEN = "0123456789abcdef0123456789abcdef"


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def gcs():
    """A gRPC server on a free local port that answers as a Ray head with token authentication: the GCS's cluster
    id and the Ray Client server's ping, to a call that carries ``TOKEN``, UNAUTHENTICATED to any other."""
    from ray.core.generated import gcs_service_pb2, gcs_service_pb2_grpc, ray_client_pb2, ray_client_pb2_grpc

    def allowed(context) -> bool:
        if dict(context.invocation_metadata()).get("authorization") == f"Bearer {TOKEN}":
            return True
        context.abort(grpc.StatusCode.UNAUTHENTICATED, "InvalidAuthToken: Authentication token is missing or incorrect")

    class Gcs(gcs_service_pb2_grpc.NodeInfoGcsServiceServicer):
        def GetClusterId(self, request, context):
            allowed(context)
            return gcs_service_pb2.GetClusterIdReply(cluster_id=b"c" * 28)

    class Client(ray_client_pb2_grpc.RayletDriverServicer):
        def ClusterInfo(self, request, context):
            allowed(context)
            return ray_client_pb2.ClusterInfoResponse(json="{}")

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    gcs_service_pb2_grpc.add_NodeInfoGcsServiceServicer_to_server(Gcs(), server)
    ray_client_pb2_grpc.add_RayletDriverServicer_to_server(Client(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield port
    finally:
        server.stop(None)


def refused(address: str) -> str:
    # seconds of CPU, not of the clock (docs/testing.md); the clock only guards against Ray's 823 s of retries
    start, cpu = time.monotonic(), cpu_seconds()
    with pytest.raises(UserError) as err:
        check_address(ExecutorOptions(name="ray", ray_address=address))
    assert cpu_seconds() - cpu < 5 and time.monotonic() - start < 120 and "\n" not in str(err.value)
    return str(err.value)


def refused_env() -> str:
    """``refused`` for the address ``$RAY_ADDRESS`` names."""
    with pytest.raises(UserError) as err:
        check_address(ExecutorOptions(name="ray"))
    return str(err.value)


@pytest.fixture
def driver(monkeypatch, tmp_path):
    """The driver's environment: no token, no Ray address, a home without ~/.ray (set what a test needs)."""
    for name in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_ADDRESS", "RAY_USE_TLS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    return monkeypatch


def test_an_address_where_nothing_listens_is_one_line_at_once(driver):
    port = closed_port()
    assert refused(f"127.0.0.1:{port}") == (
        f"--ray-address=127.0.0.1:{port}: nothing answers there (Connection refused); start a cluster with "
        "`ray start --head` and give its address"
    )
    driver.setenv("RAY_ADDRESS", f"ray://127.0.0.1:{port}")
    assert refused_env().startswith(f"RAY_ADDRESS=ray://127.0.0.1:{port}: nothing answers there")


@pytest.mark.parametrize("scheme", ["", "ray://"])
def test_a_head_with_token_authentication_names_ray_auth_mode(driver, gcs, scheme):
    address = f"{scheme}127.0.0.1:{gcs}"
    assert refused(address) == (
        f"--ray-address={address}: the Ray cluster requires token authentication (Ray's default for `ray start "
        "--head`) and this driver sends no token: set RAY_AUTH_MODE=token with the cluster's token (RAY_AUTH_TOKEN, "
        "or `ray get-auth-token` on its head), or start the head with RAY_AUTH_MODE=disabled"
    )
    driver.setenv("RAY_AUTH_MODE", "token")
    assert "RAY_AUTH_MODE=token, but this driver has no token: set RAY_AUTH_TOKEN" in refused(address)
    driver.setenv("RAY_AUTH_TOKEN", "f" * 32)
    assert "the Ray cluster refuses this driver's token (RAY_AUTH_MODE=token)" in refused(address)
    driver.delenv("RAY_AUTH_TOKEN")
    token_file = Path(os.environ["HOME"]) / ".ray" / "auth_token"
    token_file.parent.mkdir()
    token_file.write_text(TOKEN + "\n")
    check_address(ExecutorOptions(name="ray", ray_address=address))  # the token Ray would send: let in


def test_a_server_that_is_no_ray_cluster_says_so(driver):
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=1))  # gRPC, but no GCS
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        assert refused(f"127.0.0.1:{port}").startswith(
            f"--ray-address=127.0.0.1:{port}: no Ray cluster answers there (its GCS: UNIMPLEMENTED"
        )
    finally:
        server.stop(None)


@pytest.mark.parametrize(
    "address,parsed",
    [
        ("10.0.0.1:6379", ("10.0.0.1", 6379)),
        ("head", ("head", 6379)),
        ("[::1]:7000", ("::1", 7000)),
        ("::1", ("::1", 6379)),
    ],
)
def test_addresses_split_as_ray_reads_them(address, parsed):
    assert split_address("--ray-address", address, 6379) == parsed


@pytest.mark.parametrize("address", ["bad:port:x", "head:0", "head:99999", ":6379"])
def test_a_malformed_address_is_invalid(address):
    with pytest.raises(UserError, match=rf"^--ray-address={address} is invalid: expected host:port"):
        check_address(ExecutorOptions(name="ray", ray_address=address))


def test_a_local_ray_is_not_asked(driver):
    for address in (None, "local", "auto"):
        check_address(ExecutorOptions(name="ray", ray_address=address))
