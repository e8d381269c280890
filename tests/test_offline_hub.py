"""``model.pretrained: hub`` where the hub cannot be reached (issue 72): peftlab's one line at once, not
huggingface_hub's five retries (23 s of back-off, a warning on stderr for each); where it can (a local
server speaking the hub's resolve protocol), the file is downloaded into the cache as before."""

import http.server
import os
import socket
import sys
import threading

import pytest
import yaml
from hubcache import etag, timm_hub_files
from testkit import REPO, TINY_MODEL, run_cli

from peftlab.models.hub import hub_weights_file
from peftlab.utils.errors import WeightsError

sys.path.insert(0, str(REPO / "tests" / "data"))
import datafiles

NAME = TINY_MODEL["name"]  # timm's hub weights: timm/vit_tiny_patch16_224.augreg_in21k_ft_in1k
REPO_ID = f"timm/{NAME}.augreg_in21k_ft_in1k"
COMMIT = "0123456789abcdef0123456789abcdef01234567"
NO_ADDRESS = "http://hub.invalid"  # .invalid never resolves (RFC 6761): a machine without DNS for the hub


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens there once closed: connection refused


class FakeHub(http.server.BaseHTTPRequestHandler):
    """HEAD and GET of ``/<org>/<name>/resolve/<revision>/<file>`` as the hub answers them for a git-LFS file."""

    files: dict[str, bytes] = {}
    asked: list[str] = []

    def do_HEAD(self):
        self.answer(body=False)

    def do_GET(self):
        self.answer(body=True)

    def answer(self, body: bool) -> None:
        self.asked.append(f"{self.command} {self.path}")
        repo, _, rest = self.path.lstrip("/").partition("/resolve/")
        data = self.files.get(f"{repo}/{rest.partition('/')[2]}")
        if data is None:
            self.send_response(404)
            self.send_header("X-Error-Code", "EntryNotFound")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("X-Repo-Commit", COMMIT)
        self.send_header("ETag", f'"{etag("model.safetensors", data)}"')
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if body:
            self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def empty_cache(tmp_path, monkeypatch):
    """An empty hub cache, HF_HUB_OFFLINE not set: huggingface_hub would ask the hub."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    return tmp_path / "hub"


@pytest.fixture
def fake_hub(monkeypatch):
    """A local server holding REPO_ID's model.safetensors (random weights of the tiny ViT); the endpoint."""
    files, _ = timm_hub_files(NAME, **{k: v for k, v in TINY_MODEL.items() if k != "name"})
    monkeypatch.setattr(FakeHub, "files", {f"{REPO_ID}/model.safetensors": files["model.safetensors"]})
    monkeypatch.setattr(FakeHub, "asked", [])
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), FakeHub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    endpoint = f"http://127.0.0.1:{server.server_address[1]}"
    use_endpoint(monkeypatch, endpoint)
    yield endpoint
    server.shutdown()
    server.server_close()


def use_endpoint(monkeypatch, endpoint: str) -> None:
    """The hub at ``endpoint``, as HF_ENDPOINT sets it when huggingface_hub is imported (it reads it once)."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "ENDPOINT", endpoint)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", endpoint + "/{repo_id}/resolve/{revision}/{filename}")


def no_retries(monkeypatch) -> None:
    """huggingface_hub's back-off sleeps before each retry: here a sleep is an error."""

    def sleep(seconds):
        raise AssertionError(f"huggingface_hub retried (slept {seconds} s)")

    monkeypatch.setattr("huggingface_hub.utils._http.time.sleep", sleep)


@pytest.mark.parametrize("endpoint", [NO_ADDRESS, "closed-port"])
def test_an_unreachable_hub_is_one_line_without_retries(empty_cache, monkeypatch, endpoint):
    endpoint = f"http://127.0.0.1:{closed_port()}" if endpoint == "closed-port" else endpoint
    use_endpoint(monkeypatch, endpoint)
    no_retries(monkeypatch)
    with pytest.raises(WeightsError) as err:
        hub_weights_file(NAME)
    message = str(err.value)
    assert "\n" not in message
    assert f"model.safetensors of {REPO_ID} is not in the hub cache {empty_cache}" in message
    assert f"the hub {endpoint.removeprefix('http://')} could not be reached (ConnectError" in message
    assert f"`hf download {REPO_ID} model.safetensors`" in message


def test_offline_train_prints_one_peftlab_line_and_no_hub_retries(tmp_path):
    """The real case: no network, so no address for the hub (HF_ENDPOINT on a name that never resolves),
    the weights not cached. The timeout bounds a hang; the lines say whether huggingface_hub retried."""
    datafiles.write_image_folder(tmp_path / "shapes", split=True)
    config = tmp_path / "hub.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "model": {**TINY_MODEL, "pretrained": "hub"},
                "method": {"name": "lora", "r": 2},
                "data": {"name": "imagefolder", "root": str(tmp_path / "shapes")},
                "train": {"max_steps": 1, "batch_size": 4},
            }
        )
    )
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HUB_CACHE")}
    env.update(HF_HOME=str(tmp_path / "hf-home"), HF_ENDPOINT=NO_ADDRESS)
    proc = run_cli("train", str(config), "--run-dir", str(tmp_path / "run"), env=env, timeout=180)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("peftlab: error: model.pretrained='hub': ") and proc.stderr.count("\n") == 1, (
        proc.stderr
    )
    assert "the hub hub.invalid could not be reached" in proc.stderr
    assert f"hub cache {tmp_path / 'hf-home' / 'hub'}" in proc.stderr


def test_with_a_reachable_hub_the_weights_are_downloaded_then_read_from_the_cache(empty_cache, fake_hub, monkeypatch):
    """The path with network is huggingface_hub's own download; once cached, the file serves without it."""
    path = hub_weights_file(NAME)
    assert path == empty_cache / f"models--timm--{REPO_ID[5:]}" / "snapshots" / COMMIT / "model.safetensors"
    assert path.read_bytes() == FakeHub.files[f"{REPO_ID}/model.safetensors"]
    assert f"GET /{REPO_ID}/resolve/main/model.safetensors" in FakeHub.asked
    use_endpoint(monkeypatch, f"http://127.0.0.1:{closed_port()}")
    no_retries(monkeypatch)
    assert hub_weights_file(NAME) == path


def test_a_file_the_reachable_hub_lacks_is_its_own_line(empty_cache, fake_hub, monkeypatch):
    monkeypatch.setattr(FakeHub, "files", {})
    with pytest.raises(WeightsError, match=f"{REPO_ID} on the hub has no model.safetensors; peftlab loads safetensors"):
        hub_weights_file(NAME)
