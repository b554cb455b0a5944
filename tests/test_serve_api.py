"""`var-fast serve` as a real process on 127.0.0.1: the JSON API, batching of concurrent requests (images
identical to the same requests served alone), a bounded load test, bad inputs, a full queue and clients
that go away mid-generation."""
import base64
import concurrent.futures
import http.client
import json
import threading
import time

import numpy as np
import pytest

pytest.importorskip("fastapi", reason="var-fast serve needs the serve extra: pip install 'var_fast[serve]'")
pytest.importorskip("uvicorn", reason="var-fast serve needs the serve extra: pip install 'var_fast[serve]'")

from serve_process import Server, decode_png, get_json, png_b64, post_json, post_stream  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = Server(log_path=str(tmp_path_factory.mktemp("serve") / "server.log"))
    yield srv
    srv.close()


@pytest.fixture(scope="module")
def fast_server(server):
    if get_json(server.url + "/api/info")[1]["backend"] != "fast":
        pytest.skip("batching needs the fast backend (the native extension is not built)")
    return server


def generate(url, **body):
    status, out, _ = post_json(url + "/api/generate", body)
    assert status == 200, out
    return [base64.b64decode(b) for b in out["images"]], out["settings"]


def test_page_and_info(server):
    import urllib.request
    with urllib.request.urlopen(server.url + "/") as resp:
        assert resp.status == 200 and b"var-fast" in resp.read()
    status, info = get_json(server.url + "/api/info")
    assert status == 200
    assert info["class_names"][:3] == ["disk", "ring", "square"] and info["num_classes"] == 10
    from var_fast.default_model import default_model_info  # noqa: PLC0415
    bundled = default_model_info()
    assert info["image_size"] == 64 and info["patch_nums"] == bundled["patch_nums"]
    rec = bundled["sampling"]
    assert info["defaults"] == {k: rec[k] for k in ("cfg", "top_k", "top_p")}  # the bundled model's recommendation
    assert "127.0.0.1" in server.log()


def test_served_images_are_the_samplers_images(fast_server):
    """What the API returns is Sampler.sample's output for the same settings, rounded as the CLI saves it."""
    import var_fast
    from var_fast.serve.batcher import png_bytes
    pngs, settings = generate(fast_server.url, **{"class": 3, "n": 2, "seed": 11, "cfg": 2.5, "top_k": 20, "top_p": 0.0})
    assert settings["seed"] == 11 and settings["label"] == 3 and settings["class_name"] == "triangle"
    assert "var-fast sample --classes 3 --per-class 2 --cfg 2.5 --top-k 20 --top-p 0 --seed 11" in settings["command"]
    images = var_fast.load(backend="fast", device="cpu").sample([3, 3], cfg=2.5, top_k=20, top_p=0.0, seed=11)
    assert pngs == [png_bytes(im) for im in images]


def test_preview_streams_every_scale_then_the_image(fast_server):
    events = post_stream(fast_server.url + "/api/generate", {"class": 1, "n": 2, "seed": 4, "preview": True})
    scales = [e for e in events if e["event"] == "scale"]
    from var_fast.default_model import default_model_info  # noqa: PLC0415
    patch_nums = default_model_info()["patch_nums"]
    assert [e["scale"] for e in scales] == list(range(len(patch_nums) - 1))  # every scale before the last
    for e, pn in zip(scales, patch_nums[:-1], strict=True):  # the first image on each scale's grid
        assert len(e["images"]) == 1 and decode_png(e["images"][0]).shape == (pn, pn, 3)
    assert events[-1]["event"] == "done" and len(events[-1]["images"]) == 2
    alone, _ = generate(fast_server.url, **{"class": 1, "n": 2, "seed": 4})
    assert [base64.b64decode(b) for b in events[-1]["images"]] == alone  # the preview does not change the image


def load_requests(count):
    rng = np.random.default_rng(0)
    out = []
    for i in range(count):
        body = {"class": int(rng.integers(10)), "n": int(1 + (i % 5 == 0)), "seed": int(rng.integers(2**40)),
                "cfg": [3.0, 1.5, 0.0][i % 3], "top_k": [0, 50][i % 2], "top_p": [0.0, 0.9][(i // 2) % 2]}
        out.append(body)
    return out


def test_load_concurrent_requests_are_batched_and_equal_to_served_alone(fast_server):
    """32 requests from 8 concurrent clients: every one answered, several sampled in one pass, and each
    request's images byte-identical to the same request served alone afterwards."""
    requests = load_requests(32)
    before = get_json(fast_server.url + "/api/stats")[1]["passes"]
    results = [None] * len(requests)

    def client(k):
        for i in range(k, len(requests), 8):
            results[i] = generate(fast_server.url, **requests[i])[0]

    t0 = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        list(pool.map(client, range(8)))
    concurrent_s = time.monotonic() - t0
    stats = get_json(fast_server.url + "/api/stats")[1]
    together = stats["requests_per_pass"][before:]
    assert sum(together) == 32, together  # nothing lost, nothing run twice
    assert max(together) > 1, f"no two requests shared a pass: {together}"
    assert all(len(r) == body["n"] for r, body in zip(results, requests))
    t0 = time.monotonic()
    for body, got in zip(requests, results):
        alone, _ = generate(fast_server.url, **body)
        assert got == alone, f"request {body} differs when batched"
    print(f"\n32 requests: {concurrent_s:.1f} s from 8 clients in {len(together)} passes {together}; "
          f"{time.monotonic() - t0:.1f} s one at a time")


BAD_GENERATE = [
    ({"class": 10}, "out of range"),
    ({"class": -1}, "out of range"),
    ({}, "class is required"),
    ({"class": "3"}, "class must be an integer"),
    ({"class": 1, "cfg": -1}, "cfg must be"),
    ({"class": 1, "cfg": float("nan")}, "cfg must be a finite number"),
    ({"class": 1, "top_k": -1}, "top_k must be"),
    ({"class": 1, "top_k": 1.5}, "top_k must be an integer"),
    ({"class": 1, "top_p": 2}, "top_p must be in [0, 1]"),
    ({"class": 1, "seed": -1}, "seed must be"),
    ({"class": 1, "seed": 2**63}, "seed must be"),
    ({"class": 1, "seed": "x"}, "seed must be an integer"),
    ({"class": 1, "n": 0}, "n must be in 1..8"),
    ({"class": 1, "n": 9}, "n must be in 1..8"),
    ({"class": 1, "preview": "yes"}, "preview must be true or false"),
    ({"class": 1, "path": "/etc/passwd"}, "unknown field(s) path"),
    ([1, 2], "must be a JSON object"),
]


@pytest.mark.parametrize("body,message", BAD_GENERATE, ids=[m for _, m in BAD_GENERATE])
def test_bad_generate_requests(server, body, message):
    status, out, _ = post_json(server.url + "/api/generate", body)
    assert status == 400 and message in out["error"], out
    assert "Traceback" not in json.dumps(out)


def _edit_body(**extra):
    image = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    mask = np.full((64, 64), 255, np.uint8)
    mask[16:48, 16:48] = 0
    return dict({"image": png_b64(image), "mask": png_b64(mask), "seed": 1}, **extra)


def _pil_b64(image, fmt):
    import io
    out = io.BytesIO()
    image.save(out, format=fmt)
    return base64.b64encode(out.getvalue()).decode()


def bad_edits():
    from PIL import Image
    huge = _pil_b64(Image.new("1", (5000, 4000)), "PNG")  # small file, 20 M pixels
    gif = _pil_b64(Image.new("RGB", (64, 64)), "GIF")
    return [
        (_edit_body(image="not base64!"), 400, "image is not valid base64"),
        (_edit_body(image="/etc/passwd"), 400, "image is not valid base64"),
        (_edit_body(image=base64.b64encode(b"#!/bin/sh\necho hi\n" * 10).decode()), 400, "could not be decoded"),
        (_edit_body(image=gif), 400, "could not be decoded as a PNG, JPEG or WebP"),
        (_edit_body(image=huge), 413, "more than 16777216 pixels"),
        (_edit_body(mask=png_b64(np.zeros((10, 10), np.uint8))), 400, "mask is 10x10"),
        (_edit_body(mask=png_b64(np.full((64, 64), 255, np.uint8))), 400, "nothing to generate"),
        (_edit_body(**{"class": 10}), 400, "out of range"),
        (_edit_body(top_p=-0.5), 400, "top_p must be in [0, 1]"),
        ({"mask": _edit_body()["mask"]}, 400, "an edit needs image and mask"),
    ]


def test_bad_edit_requests(server):
    for body, status, message in bad_edits():
        got, out, _ = post_json(server.url + "/api/edit", body)
        assert got == status and message in out["error"], (message, out)
        assert "Traceback" not in json.dumps(out)


def test_oversized_and_malformed_bodies(server):
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    conn.putrequest("POST", "/api/edit")
    conn.putheader("Content-Type", "application/json")
    conn.putheader("Content-Length", str(30 << 20))  # refused on the header, before 30 MiB are read
    conn.endheaders()
    conn.send(b'{"image": "')
    resp = conn.getresponse()
    assert resp.status == 413 and "larger than" in json.loads(resp.read())["error"]
    conn.close()
    status, out, _ = post_json(server.url + "/api/generate", None, raw=b"\xff\xfe{")
    assert status == 400 and out["error"] == "the request body is not valid JSON"
    assert get_json(server.url + "/api/health")[0] == 200


def test_edit_regenerates_the_painted_region_only(fast_server):
    body = _edit_body(**{"class": 9})
    status, out, _ = post_json(fast_server.url + "/api/edit", body)
    assert status == 200, out
    edited = decode_png(out["images"][0])
    assert edited.shape == (64, 64, 3) and out["settings"]["kind"] == "edit" and out["settings"]["label"] == 9
    assert "var-fast edit --image input.png --mask mask.png --class 9" in out["settings"]["command"]
    again = post_json(fast_server.url + "/api/edit", body)[1]
    assert again["images"] == out["images"]  # same seed, same image


def test_client_that_disconnects_does_not_disturb_the_others(fast_server):
    """A streaming client hangs up after its first scale, a plain one while queued; the requests around
    them are answered with the images they get alone, and the server keeps serving."""
    url = fast_server.url
    expected = {seed: generate(url, **{"class": 2, "n": 2, "seed": seed})[0] for seed in (21, 22)}
    skipped_before = get_json(url + "/api/stats")[1]["skipped_disconnected"]
    host, port = "127.0.0.1", fast_server.port

    def hang_up_streaming():
        conn = http.client.HTTPConnection(host, port, timeout=60)
        conn.request("POST", "/api/generate", json.dumps({"class": 5, "n": 8, "seed": 3, "preview": True}),
                     {"Content-Type": "application/json"})
        resp = conn.getresponse()
        first = json.loads(resp.readline())
        conn.sock.close()  # gone mid-generation
        conn.close()
        return first["event"]

    def hang_up_queued():
        conn = http.client.HTTPConnection(host, port, timeout=60)
        conn.request("POST", "/api/generate", json.dumps({"class": 6, "n": 8, "seed": 4}),
                     {"Content-Type": "application/json"})
        time.sleep(0.05)
        conn.sock.close()
        conn.close()

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        streaming = pool.submit(hang_up_streaming)
        time.sleep(0.1)
        queued = [pool.submit(hang_up_queued) for _ in range(3)]
        others = {seed: pool.submit(generate, url, **{"class": 2, "n": 2, "seed": seed}) for seed in (21, 22)}
        assert streaming.result() == "scale"
        [q.result() for q in queued]
        for seed, fut in others.items():
            assert fut.result()[0] == expected[seed]
    deadline = time.monotonic() + 120
    while get_json(url + "/api/health")[1]["queued"] and time.monotonic() < deadline:
        time.sleep(0.2)
    assert get_json(url + "/api/health")[1]["queued"] == 0
    assert get_json(url + "/api/stats")[1]["skipped_disconnected"] > skipped_before  # dropped, never sampled
    assert generate(url, **{"class": 2, "n": 2, "seed": 21})[0] == expected[21]


def test_full_queue_answers_busy(tmp_path):
    """With room for 2 requests, a burst of 8 gets 503 busy (with Retry-After) for the rest; the 2 finish."""
    srv = Server("--max-queue", "2", "--max-batch", "4", log_path=str(tmp_path / "server.log"))
    try:
        barrier = threading.Barrier(8)

        def one(i):
            barrier.wait()
            return post_json(srv.url + "/api/generate", {"class": 1, "n": 4, "seed": i})

        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(one, range(8)))
        busy = [a for a in answers if a[0] == 503]
        done = [a for a in answers if a[0] == 200]
        assert len(busy) + len(done) == 8 and 1 <= len(done) <= 4 and busy, [a[0] for a in answers]
        assert all("busy" in a[1]["error"] and a[2].get("retry-after") for a in busy)
        assert all(len(a[1]["images"]) == 4 for a in done)
        assert post_json(srv.url + "/api/generate", {"class": 1, "seed": 0})[0] == 200  # and serves again
    finally:
        srv.close()
