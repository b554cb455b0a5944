"""The server's one worker: a bounded queue of jobs, and a thread that owns the model and samples the
generation requests waiting together in one batch.

Why a request's images do not depend on the batch it lands in: the fast backend draws each request's
rows with that request's own seed, settings and image offsets (``FastSampler.sample(groups=...)``), the
transformer's rows do not mix, and each request's images are decoded on their own (the same decoder call
as the request served alone). On CUDA every pass is padded to the same row count (``pad_to``), so the
matrix products have the same shapes whatever the composition (cuBLAS picks kernels by shape); on the
CPU the products were measured row-independent across batch sizes, and tests/test_serve_api.py checks
served images against the same requests served alone. The reference backend has no per-request random
streams: there each request is sampled alone. Edits run one request at a time.
"""
from __future__ import annotations

import collections
import io
import threading
import time
import traceback
from typing import Callable, List, Optional

import torch

from var_fast.serve.requests import EditRequest, GenerateRequest


class Busy(Exception):
    """The queue is full: the client is told to come back later."""


def png_bytes(image: torch.Tensor) -> bytes:
    """(3, H, W) in [0, 1] -> PNG bytes (the rounding of the CLI's ``save_png``)."""
    from PIL import Image
    array = image.clamp(0, 1).mul(255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    out = io.BytesIO()
    Image.fromarray(array).save(out, format="PNG")
    return out.getvalue()


class Job:
    """One request in the queue. ``emit`` is called from the worker thread with events (dicts):
    ``{"event": "scale", "scale": si, "of": S, "images": [png]}`` (with preview: the first image), then
    ``{"event": "done", "images": [png, ...]}`` or ``{"event": "error", "message": ..., "status": ...}``."""

    def __init__(self, request, emit: Callable[[dict], None]):
        self.request = request
        self.emit = emit
        self.cancelled = threading.Event()  # the client went away: skip it if it has not started

    @property
    def rows(self) -> int:
        return self.request.n if isinstance(self.request, GenerateRequest) else 1


class Batcher:
    def __init__(self, sampler, *, max_batch: int, max_queue: int, window_s: float = 0.02,
                 pad_to: Optional[int] = None, preview: Optional[Callable] = None):
        self.sampler = sampler
        self.preview = preview  # (f_hat, si) -> (B, 3, pn, pn) images, e.g. LatentPreview
        self.max_batch, self.max_queue, self.window_s, self.pad_to = max_batch, max_queue, window_s, pad_to
        self._pending: collections.deque = collections.deque()
        self._running = 0
        self._cond = threading.Condition()
        self._stop = False
        self.batches: List[List[int]] = []  # each generation pass: its requests' image counts (/api/stats)
        self.skipped = 0                     # requests dropped before they ran: their client had gone
        self._thread = threading.Thread(target=self._loop, name="var-fast-serve-worker", daemon=True)
        self._thread.start()

    # ---- the HTTP side ----------------------------------------------------------------------------------
    def submit(self, job: Job) -> None:
        with self._cond:
            if len(self._pending) + self._running >= self.max_queue:
                raise Busy(f"busy: {self.max_queue} requests are queued or running; try again shortly")
            self._pending.append(job)
            self._cond.notify()

    def queued(self) -> int:
        with self._cond:
            return len(self._pending) + self._running

    def stats(self) -> dict:
        with self._cond:
            passes = list(self.batches)
        return {"passes": len(passes), "requests_per_pass": [len(p) for p in passes],
                "images_per_pass": [sum(p) for p in passes], "skipped_disconnected": self.skipped}

    def stop(self) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify()
        self._thread.join(timeout=30)

    # ---- the worker ----------------------------------------------------------------------------------
    def _next_batch(self) -> List[Job]:
        """The oldest live job, then (generation on the fast backend) every later generation job that fits
        in max_batch rows, waiting up to window_s for more to arrive."""
        with self._cond:
            while True:
                while not self._pending and not self._stop:
                    self._cond.wait()
                if self._stop:
                    return []
                first = self._pending.popleft()
                if not first.cancelled.is_set():
                    break
                self.skipped += 1
            batch = [first]
            self._running = 1  # counted against max_queue while the batch forms
            if isinstance(first.request, GenerateRequest) and self.sampler.backend == "fast":
                deadline = time.monotonic() + self.window_s
                rows = first.rows
                while rows < self.max_batch:
                    for job in list(self._pending):
                        if job.cancelled.is_set():
                            self._pending.remove(job)
                            self.skipped += 1
                        elif isinstance(job.request, GenerateRequest) and rows + job.rows <= self.max_batch:
                            self._pending.remove(job)
                            batch.append(job)
                            rows += job.rows
                            self._running += 1
                    left = deadline - time.monotonic()
                    if left <= 0 or rows >= self.max_batch:
                        break
                    self._cond.wait(timeout=left)  # woken by a new job, or the window ends
            self._running = len(batch)
            return batch

    def _loop(self) -> None:
        while True:
            batch = self._next_batch()
            if not batch:
                return
            try:
                if isinstance(batch[0].request, EditRequest):
                    self._run_edit(batch[0])
                elif self.sampler.backend == "fast":
                    self._run_generate_batch(batch)
                else:
                    self._run_generate_alone(batch[0])
            except ValueError as err:  # a check inside the sampler (e.g. a mask that keeps everything)
                for job in batch:
                    job.emit({"event": "error", "message": str(err), "status": 400})
            except Exception as err:  # logged here in full; the client gets one line
                traceback.print_exc()
                for job in batch:
                    job.emit({"event": "error", "message": f"internal error: {type(err).__name__}", "status": 500})
            finally:
                with self._cond:
                    self._running = 0

    def _emit_preview(self, job: Job, f_hat: torch.Tensor, si: int) -> None:
        S = len(self.sampler.patch_nums)
        if job.request.preview and self.preview is not None and si < S - 1 and not job.cancelled.is_set():
            image = self.preview(f_hat[:1], si)[0]  # the request's first image: what the page shows
            job.emit({"event": "scale", "scale": si, "of": S, "images": [png_bytes(image)]})

    def _finish(self, job: Job, f_hat: torch.Tensor) -> None:
        if job.cancelled.is_set():
            return
        s = self.sampler
        with s._autocast():  # as Sampler.sample decodes
            images = s.vae.fhat_to_img(f_hat).add_(1).mul_(0.5).float()
        job.emit({"event": "done", "images": [png_bytes(im) for im in images]})

    @torch.no_grad()
    def _run_generate_batch(self, batch: List[Job]) -> None:
        from var_fast.fast_sampler import RowGroup
        s = self.sampler
        groups, labels, start = [], [], 0
        for job in batch:
            r, p = job.request, job.request.sampling
            groups.append(RowGroup(start, start + r.n, p.seed, p.cfg, p.top_k, p.top_p))
            labels += [r.label] * r.n
            start += r.n
        rows = max(start, self.pad_to or 0)
        labels += [0] * (rows - start)  # padding rows: in no group, their tokens are 0 and unused
        self.batches.append([job.rows for job in batch])
        label_B = torch.tensor(labels, dtype=torch.long, device=s.device)

        def on_f_hat(si, f_hat):
            for job, g in zip(batch, groups):
                self._emit_preview(job, f_hat[g.start:g.stop], si)

        f_hat, _ = s._fast_sampler().sample(label_B, seed=0, groups=groups, on_f_hat=on_f_hat)
        for job, g in zip(batch, groups):
            self._finish(job, f_hat[g.start:g.stop])

    @torch.no_grad()
    def _run_generate_alone(self, job: Job) -> None:
        r, p, s = job.request, job.request.sampling, self.sampler
        self.batches.append([job.rows])
        images = s.sample([r.label] * r.n, cfg=p.cfg, top_k=p.top_k, top_p=p.top_p, seed=p.seed,
                          on_f_hat=lambda si, f_hat: self._emit_preview(job, f_hat, si))
        if not job.cancelled.is_set():
            job.emit({"event": "done", "images": [png_bytes(im) for im in images]})

    @torch.no_grad()
    def _run_edit(self, job: Job) -> None:
        r, p = job.request, job.request.sampling
        edited = self.sampler.edit(r.image[None], r.keep_mask, r.label, cfg=p.cfg, top_k=p.top_k, top_p=p.top_p,
                                   seed=p.seed)
        if not job.cancelled.is_set():
            job.emit({"event": "done", "images": [png_bytes(edited[0])]})
