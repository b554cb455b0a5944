"""``var-fast serve`` as a real process on the loopback address and a free port, and a small JSON client
(the standard library's, so the tests show the API works without the page)."""
from __future__ import annotations

import base64
import io
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from typing import List, Optional, Tuple

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, *args: str, log_path: str, timeout: float = 120.0):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [REPO, os.environ.get("PYTHONPATH")])))
        self.log_path = log_path
        self._log = open(log_path, "w")
        self.proc = subprocess.Popen([sys.executable, "-m", "var_fast.cli", "serve", "--port", str(self.port), *args],
                                     stdout=self._log, stderr=subprocess.STDOUT, env=env, cwd=REPO)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"var-fast serve exited with {self.proc.returncode}:\n{self.log()}")
            try:
                if get_json(self.url + "/api/health")[0] == 200:
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.close()
                raise RuntimeError(f"var-fast serve did not answer within {timeout} s:\n{self.log()}")
            time.sleep(0.2)

    def log(self) -> str:
        self._log.flush()
        with open(self.log_path) as f:
            return f.read()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


def _call(req, timeout: float) -> Tuple[int, dict, dict]:
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read()), {k.lower(): v for k, v in resp.headers.items()}
    except urllib.error.HTTPError as err:
        body, headers = err.read(), {k.lower(): v for k, v in err.headers.items()}
        try:
            return err.code, json.loads(body), headers
        except ValueError:
            return err.code, {"raw": body.decode("utf-8", "replace")}, headers


def get_json(url: str, timeout: float = 10.0) -> Tuple[int, dict]:
    status, body, _ = _call(urllib.request.Request(url), timeout)
    return status, body


def post_json(url: str, body, timeout: float = 300.0, raw: Optional[bytes] = None) -> Tuple[int, dict, dict]:
    data = raw if raw is not None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"}, method="POST")
    return _call(req, timeout)


def post_stream(url: str, body, timeout: float = 300.0) -> List[dict]:
    """NDJSON events of a streamed generation."""
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"},
                                 method="POST")
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return [json.loads(line) for line in resp if line.strip()]


def png_b64(array) -> str:
    """(H, W, 3) or (H, W) uint8 array -> base64 PNG."""
    from PIL import Image
    out = io.BytesIO()
    Image.fromarray(array).save(out, format="PNG")
    return base64.b64encode(out.getvalue()).decode()


def decode_png(b64: str):
    import numpy as np
    from PIL import Image
    return np.array(Image.open(io.BytesIO(base64.b64decode(b64))))
