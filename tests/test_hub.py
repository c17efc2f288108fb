"""Hub loading through huggingface_hub, offline: a local HTTP endpoint and a pre-filled cache.

huggingface_hub reads HF_ENDPOINT / HF_HUB_CACHE / HF_HUB_OFFLINE at import time, so each case
loads the model in a fresh interpreter.
"""

import hashlib
import http.server
import os
import subprocess
import sys
import threading

import pytest

REPO = "someone/cmasktrack-tiny"
COMMIT = "0123456789abcdef0123456789abcdef01234567"

CHILD = r"""
import sys, torch
from cmasktrack import CMaskTrack
m = CMaskTrack.from_pretrained(sys.argv[1], device="cpu", revision=sys.argv[2] if len(sys.argv) > 2 else None)
print("SUM", float(sum(p.double().sum() for p in m.state_dict().values())))
"""


def _child(env_extra, *args):
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env.update(env_extra)
    env["PYTHONPATH"] = os.pathsep.join([os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                         env.get("PYTHONPATH", "")])
    return subprocess.run([sys.executable, "-c", CHILD, *args], env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def saved(tmp_path_factory, tiny_model):
    d = tmp_path_factory.mktemp("hubmodel")
    tiny_model.save_pretrained(d)
    total = float(sum(p.double().sum() for p in tiny_model.state_dict().values()))
    return d, total


def _serve(files, hits):
    class Handler(http.server.BaseHTTPRequestHandler):
        def _resolve(self):
            prefix = f"/{REPO}/resolve/"
            if not self.path.startswith(prefix):
                return None
            rev, _, name = self.path[len(prefix):].partition("/")
            return files.get(name) if rev in ("main", COMMIT) else None

        def _headers(self, data):
            self.send_response(200)
            self.send_header("X-Repo-Commit", COMMIT)
            self.send_header("ETag", '"' + hashlib.sha256(data).hexdigest() + '"')
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()

        def do_HEAD(self):
            data = self._resolve()
            if data is None:
                self.send_response(404)
                self.send_header("X-Error-Code", "EntryNotFound")
                self.end_headers()
                return
            self._headers(data)

        def do_GET(self):
            hits.append(self.path)
            data = self._resolve()
            if data is None:
                self.send_response(404)
                self.end_headers()
                return
            self._headers(data)
            self.wfile.write(data)

        def log_message(self, *a):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def test_download_from_local_endpoint_then_offline_cache(saved, tmp_path):
    d, total = saved
    files = {n: (d / n).read_bytes() for n in ("config.json", "model.safetensors")}
    hits = []
    server = _serve(files, hits)
    cache = tmp_path / "cache"
    try:
        endpoint = f"http://127.0.0.1:{server.server_address[1]}"
        r = _child({"HF_ENDPOINT": endpoint, "HF_HUB_CACHE": str(cache)}, REPO)
        assert r.returncode == 0, r.stderr
        assert float(r.stdout.split("SUM")[1]) == pytest.approx(total, rel=1e-12)
        downloads = sorted(h.rsplit("/", 1)[1] for h in hits if "/resolve/" in h)
        assert downloads == ["config.json", "model.safetensors"]
    finally:
        server.shutdown()
    # the server is gone: offline mode reads the cache that download filled
    r = _child({"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache)}, REPO)
    assert r.returncode == 0, r.stderr
    assert float(r.stdout.split("SUM")[1]) == pytest.approx(total, rel=1e-12)
    # an unknown repo offline is a clear error
    r = _child({"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache)}, "someone/other")
    assert r.returncode != 0
    assert (f"'someone/other' is not a local file or directory, and model 'someone/other' is not in the Hugging "
            f"Face cache ({cache}); HF_HUB_OFFLINE is set, so the hub was not asked") in r.stderr
