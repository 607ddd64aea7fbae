"""Weight bus: the learner publishes versioned weights; policy hosts validate them and swap between
``infer`` calls (DESIGN §5).

One update = the safetensors serialisation of ``{name: array}`` split into chunks; each chunk is a
message ``{"type": "weights", "version", "step", "checksum", "algo", "total_bytes", "chunk",
"n_chunks", "subset", "publisher", "sent_time_s", "data": uint8[n]}`` on a PUB socket (latest wins:
a newer version arriving mid-assembly discards the older one). The publisher also sends
``{"type": "heartbeat", "publisher", "version"}`` every ``heartbeat_s``, and re-sends the newest
update on the next few heartbeats (PUB/SUB does not replay: a subscriber that connects late still
gets it); subscribers count an exact repeat of an update they already judged as a duplicate.

``WeightSubscriber`` checks, in order: strictly increasing version, complete chunks, checksum
(xxh3-128 or sha256 over the safetensors bytes), that the bytes parse as safetensors, names
(exactly ``target.weight_spec()``'s, or a subset when ``allow_subset``), shapes, dtypes, finite
values. A rejected update changes nothing (last good weights keep serving); it is counted by
reason in ``status()["rejected"]`` and logged. Accepted updates are *staged*; the owner installs
them with ``apply_pending()`` at its next boundary (the policy server does this between batches;
``HotSwapPolicy`` does it before each ``infer``), never during an ``infer``.

Deltas (``learner.finetune=lora|expert``): ``publish_delta`` sends only the trainable tensors
(LoRA A/B, or the action expert) with ``kind="delta"``, the ``adapter`` settings (mode, LoRA
rank/alpha/targets) and a ``base_id`` — :func:`compute_base_id` over the frozen base tensors plus
the adapter settings. A delta carries the *current values* of the trainable tensors (not a
difference to the previous version), so a subscriber that missed versions but holds the right
base is exact again after the next delta; a gap is counted (``counters["gaps"]``), not resynced.
A subscriber whose base differs (fresh process, restarted learner, late joiner) rejects the delta
(``rejected["base_mismatch"]``; another adapter shape: ``rank_mismatch``) and asks the publisher's
resync endpoint — a ROUTER on an ephemeral port announced in every heartbeat (``resync_port``,
``base_id``) — for the full base + newest delta as one ``kind="full"`` update; it proves the base
by recomputing its ``base_id`` from the received tensors before staging it. Reason names:
``version`` is a stale (non-increasing) version, ``non_finite`` a NaN/Inf tensor.
"""

from __future__ import annotations

import hashlib
import logging
import math
import threading
import time
import uuid
from typing import Any, Callable

import numpy as np

from hil_robot.transport.codec import CodecError, decode, encode
from hil_robot.transport.links import Link, ZmqLink
from hil_robot.transport.liveness import Liveness
from hil_robot.transport.safetensors_io import SafetensorsError, pack, unpack
from hil_robot.transport.security import CurveKeys

log = logging.getLogger(__name__)

WEIGHT_TYPES = frozenset({"weights", "heartbeat"})
DEFAULT_CHUNK_BYTES = 8 * 1024 * 1024
REJECT_REASONS = ("version", "incomplete", "checksum", "format", "names", "shape", "dtype", "non_finite", "load",
                  "base_mismatch", "rank_mismatch")
RESYNC_TYPES = frozenset({"resync"})
RESYNC_REQUEST_BYTES = 4096  # a resync request is tiny; anything bigger is dropped by libzmq


class WeightRejected(ValueError):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def checksum(data: Any, algo: str) -> str:
    """Hex digest of ``data`` (bytes-like): xxh3_128 (fast, needs the xxhash package) or sha256."""
    if algo == "xxh3_128":
        try:
            import xxhash
        except ImportError:
            raise WeightRejected("checksum", "checksum xxh3_128 needs the xxhash package (pip install xxhash)") from None
        return xxhash.xxh3_128_hexdigest(data)
    if algo == "sha256":
        return hashlib.sha256(data).hexdigest()
    raise WeightRejected("checksum", f"unknown checksum algorithm {algo!r}; use xxh3_128 or sha256")


def serialize(weights: dict[str, np.ndarray]) -> np.ndarray:
    """{name: array} -> safetensors file as a uint8 buffer (one copy of the data)."""
    if not weights:
        raise ValueError("publish needs at least one tensor")
    return pack(weights)


_MALLOC_TUNED = False


def keep_update_buffers() -> None:
    """glibc: serve buffers up to 64 MiB from the heap and keep up to 128 MiB of freed heap, instead
    of an mmap + page faults + munmap per buffer. A delta update allocates its payload, chunks and
    assembly buffers afresh each time; at 42 MB that first-touch faulting cost ~100 ms of the
    ~120 ms spent packing (20 ms when the pages are reused). Called once by a delta publisher and
    by a subscriber on its first delta; elsewhere (and off glibc) nothing changes."""
    global _MALLOC_TUNED
    if _MALLOC_TUNED:
        return
    _MALLOC_TUNED = True
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 64 << 20)  # M_MMAP_THRESHOLD
        libc.mallopt(-1, 128 << 20)  # M_TRIM_THRESHOLD
    except (OSError, AttributeError):
        pass


def compute_base_id(frozen: dict[str, np.ndarray], adapter: dict[str, Any]) -> str:
    """xxh3-128 (sha256 without xxhash) over the frozen tensors (sorted names, dtype, shape, bytes)
    and the adapter settings: equal ids mean a delta made for one model applies to the other."""
    try:
        import xxhash

        h: Any = xxhash.xxh3_128()
    except ImportError:
        h = hashlib.sha256()
    h.update(repr(sorted((str(k), repr(v)) for k, v in adapter.items())).encode())
    for name in sorted(frozen):
        arr = np.ascontiguousarray(frozen[name])
        h.update(f"{name}|{arr.dtype.str}|{arr.shape}".encode())
        h.update(arr.reshape(-1).view(np.uint8))
    return h.hexdigest()


def chunk_messages(payload: np.ndarray, *, version: int, step: int, algo: str, chunk_bytes: int, publisher: str,
                   subset: bool = False, digest: str | None = None, extra: dict[str, Any] | None = None) -> list[list[Any]]:
    """Split one serialised update into encoded chunk messages (frames lists, zero-copy slices)."""
    digest = digest or checksum(payload, algo)
    view = np.frombuffer(payload, dtype=np.uint8) if not isinstance(payload, np.ndarray) else payload
    n_chunks = max(1, -(-len(payload) // chunk_bytes))
    now = time.time()
    out = []
    for i in range(n_chunks):
        out.append(encode({"type": "weights", "version": int(version), "step": int(step), "checksum": digest,
                           "algo": algo, "total_bytes": len(payload), "chunk": i, "n_chunks": n_chunks,
                           "subset": bool(subset), "publisher": publisher, "sent_time_s": now, **(extra or {}),
                           "data": view[i * chunk_bytes:(i + 1) * chunk_bytes]}, out_of_band_bytes=0))
    return out


def validate_update(payload: Any, header: dict[str, Any], spec: dict[str, tuple[tuple[int, ...], str]],
                    *, allow_subset: bool = False) -> dict[str, np.ndarray]:
    """Check a fully assembled update against ``spec``; return the arrays or raise WeightRejected."""
    digest = checksum(payload, str(header.get("algo")))
    if digest != header.get("checksum"):
        raise WeightRejected("checksum", f"checksum mismatch for version {header.get('version')}: "
                                         f"got {digest[:16]}…, header says {str(header.get('checksum'))[:16]}…")
    try:
        arrays = unpack(payload)
    except SafetensorsError as e:
        raise WeightRejected("format", f"payload is not valid safetensors: {e}") from None
    names, expected = set(arrays), set(spec)
    if header.get("subset") and allow_subset:
        extra = names - expected
        if extra or not names:
            raise WeightRejected("names", f"unknown tensor names {sorted(extra)[:5]}; the policy has {sorted(expected)[:5]}…")
    elif names != expected:
        raise WeightRejected("names", f"tensor names differ from the policy's: missing {sorted(expected - names)[:5]}, "
                                      f"unexpected {sorted(names - expected)[:5]}")
    for name, arr in arrays.items():
        shape, dtype = spec[name]
        if tuple(arr.shape) != tuple(shape):
            raise WeightRejected("shape", f"tensor {name!r} has shape {tuple(arr.shape)}, the policy needs {tuple(shape)}")
        if arr.dtype != np.dtype(dtype):
            raise WeightRejected("dtype", f"tensor {name!r} has dtype {arr.dtype}, the policy needs {np.dtype(dtype)}")
        if arr.dtype.kind == "f" and not np.isfinite(arr).all():
            raise WeightRejected("non_finite", f"tensor {name!r} contains NaN or Inf")
    return arrays


class WeightAssembler:
    """Reassembles chunk messages into complete updates; newest version wins."""

    def __init__(self, max_total_bytes: int) -> None:
        self.max_total_bytes = max_total_bytes
        self._key: tuple[str, int] | None = None
        self._buf: bytearray | None = None
        self._header: dict[str, Any] = {}
        self._next = 0
        self._progress_s = 0.0  # when the update being assembled last got a chunk
        self.stall_s = 1.0
        self.dropped = {"superseded": 0, "incomplete": 0, "stale": 0, "too_big": 0}

    def feed(self, msg: dict[str, Any]) -> tuple[dict[str, Any], np.ndarray] | None:
        """One decoded ``weights`` message -> (header, payload) when it completes an update."""
        version, chunk, n_chunks, total = (msg.get(k) for k in ("version", "chunk", "n_chunks", "total_bytes"))
        data = msg.get("data")
        if not all(type(v) is int for v in (version, chunk, n_chunks, total)) or not isinstance(data, np.ndarray) \
                or data.dtype != np.uint8 or data.ndim != 1 or not 0 <= chunk < n_chunks:
            self.dropped["incomplete"] += 1
            return None
        if total > self.max_total_bytes or total < 0 or n_chunks < 1:
            self.dropped["too_big"] += 1
            return None
        # the publisher cuts an update into n_chunks equal chunks (the last one shorter): a first chunk
        # that cannot be part of such a split is refused before any buffer of the announced size exists
        if chunk == 0 and (data.nbytes * n_chunks < total or data.nbytes * (n_chunks - 1) >= max(total, 1)):
            self.dropped["incomplete"] += 1
            return None
        key = (str(msg.get("publisher", ""))[:64], version)
        now = time.monotonic()
        if key != self._key:
            if self._buf is not None:
                # an older version's chunk from the same publisher while its newer update is still
                # arriving: ignore it. A half-assembled update blocks nothing else for longer than
                # stall_s, and never another publisher (one stray first chunk with a huge version
                # must not lock out every later update)
                if version < self._key[1] and key[0] == self._key[0] and now - self._progress_s < self.stall_s:
                    self.dropped["stale"] += 1
                    return None
                self.dropped["superseded"] += 1
            if chunk != 0:  # joined mid-update (or lost the first chunk): wait for the next one
                self.dropped["incomplete"] += 1
                self._key, self._buf = None, None
                return None
            self._key, self._buf, self._next = key, np.empty(total, np.uint8), 0
            self._header = {k: v for k, v in msg.items() if k not in ("data", "_filled")}
        if chunk != self._next or n_chunks != self._header["n_chunks"] or total != self._header["total_bytes"]:
            self.dropped["incomplete"] += 1  # a chunk went missing (PUB drops at its high-water mark)
            self._key, self._buf = None, None
            return None
        start = self._header.setdefault("_filled", 0)
        end = start + data.nbytes
        if end > total:
            self.dropped["incomplete"] += 1
            self._key, self._buf = None, None
            return None
        self._buf[start:end] = data
        self._header["_filled"] = end
        self._progress_s = now
        self._next += 1
        if self._next < n_chunks:
            return None
        header, buf = self._header, self._buf
        self._key, self._buf = None, None
        if header.pop("_filled") != total:
            self.dropped["incomplete"] += 1
            return None
        return header, buf


class WeightPublisher:
    """The learner's side: ``publish(weights, version, step)`` on a bound PUB endpoint.

    Versions must increase strictly (subscribers reject anything else); a learner that restarts
    should continue from the highest version it ever published (saved in its checkpoint).
    """

    def __init__(self, endpoint: str = "tcp://127.0.0.1:5556", *, curve: CurveKeys | None = None,
                 chunk_bytes: int = DEFAULT_CHUNK_BYTES, checksum_algo: str = "xxh3_128", heartbeat_s: float = 0.5,
                 link: Link | None = None) -> None:
        self.link: Link = link or ZmqLink("pub", endpoint, curve=curve, hwm=100000, heartbeat_s=heartbeat_s)
        self.endpoint = getattr(self.link, "bound_endpoint", endpoint)
        self.chunk_bytes, self.algo = chunk_bytes, checksum_algo
        self.publisher_id = uuid.uuid4().hex[:12]
        self.version = -1
        self.published = 0
        # late joiners: PUB/SUB does not replay, so the newest update is re-sent (as raw bytes) on
        # the heartbeat a few times after each publish; subscribers drop a repeat of the version
        # they already accepted as a duplicate
        self.resends_per_update = 3
        self.close_linger_s = 3.0
        self._last_frames: list[bytes] = []
        self._resends_left = 0
        self._hb_period_s = float(heartbeat_s)
        self._lock = threading.Lock()
        self._closed = threading.Event()
        # delta mode: the frozen base (references, never copied: it does not change), the newest
        # delta, and the resync endpoint that serves base + delta to subscribers that lack the base
        self._curve = curve
        self._base: tuple[dict[str, np.ndarray], str, dict[str, Any]] | None = None
        self._delta: tuple[np.ndarray, int, int] | None = None  # serialised newest delta, version, step
        self._resync_link: Link | None = None
        self._resync_thread: threading.Thread | None = None
        self.resync_port = 0
        self.resync_counters = {"requests": 0, "served": 0, "bad_requests": 0, "failed": 0, "throttled": 0}
        # a resync serialises the whole model: at most one per resync_min_interval_s (requests in
        # between are dropped and counted; subscribers ask again), so a flood costs bounded CPU
        self.resync_min_interval_s = 1.0
        self._hb = threading.Thread(target=self._heartbeat, args=(heartbeat_s,), name="weights-pub-hb", daemon=True)
        self._hb.start()

    def publish(self, weights: dict[str, np.ndarray], version: int, step: int, *, subset: bool = False) -> dict[str, Any]:
        """Serialise, checksum, chunk and send. Returns {"version", "bytes", "chunks", "checksum"}."""
        return self._send(serialize(weights), version, step, subset=subset)

    def set_base(self, base: dict[str, np.ndarray], base_id: str, adapter: dict[str, Any]) -> None:
        """Delta mode: the frozen tensors deltas apply to (kept by reference: they must not change
        while published) and their id; starts the resync endpoint on first use."""
        if not base_id:
            raise ValueError("set_base needs the base_id (transport.weights.compute_base_id of the frozen tensors)")
        keep_update_buffers()
        with self._lock:
            self._base = (dict(base), str(base_id), dict(adapter))
        if self._resync_thread is None:
            self._start_resync()

    def publish_delta(self, delta: dict[str, np.ndarray], version: int, step: int) -> dict[str, Any]:
        """Send only the trainable tensors (current values) for the base given to ``set_base``.
        ``delta`` is serialised before this returns, so views of live tensors are fine."""
        if self._base is None:
            raise ValueError("publish_delta before set_base: the publisher must hold the base to resync subscribers")
        _, base_id, adapter = self._base
        payload = serialize(delta)
        out = self._send(payload, version, step, extra={"kind": "delta", "base_id": base_id, "adapter": adapter,
                                                          "prev_version": int(self.version)})
        with self._lock:  # the payload, not the arrays: the caller may pass views of live tensors
            self._delta = (payload, int(version), int(step))
        return out

    def _start_resync(self) -> None:
        endpoint = getattr(self.link, "bound_endpoint", "") or ""
        if not endpoint.startswith("tcp://"):
            log.warning("weight publisher on %r: no tcp endpoint, so no resync endpoint for deltas", endpoint)
            return
        self._resync_link = ZmqLink("router", endpoint.rsplit(":", 1)[0] + ":*", curve=self._curve, hwm=2,
                                    max_frame_bytes=RESYNC_REQUEST_BYTES, heartbeat_s=self._hb_period_s)
        self.resync_port = int(self._resync_link.bound_endpoint.rsplit(":", 1)[1])
        self._resync_thread = threading.Thread(target=self._serve_resync, name="weights-resync", daemon=True)
        self._resync_thread.start()
        log.info("weight resync endpoint on port %d", self.resync_port)

    def resync_update(self) -> tuple[dict[str, Any], np.ndarray] | None:
        """The full update a resync answers with: base + newest delta, at the newest delta's version."""
        with self._lock:
            if self._base is None or self._delta is None:
                return None
            (base, base_id, adapter), (delta, version, step) = self._base, self._delta
        payload = serialize({**base, **unpack(delta)})
        header = {"kind": "full", "base_id": base_id, "adapter": adapter, "resync": True}
        return {"version": version, "step": step, **header}, payload

    def _serve_resync(self) -> None:
        link = self._resync_link
        assert link is not None
        last_served = -math.inf
        while not self._closed.is_set():
            got = link.recv(0.1)
            if got is None:
                continue
            peer, frames = got
            try:
                decode(frames, allowed_types=RESYNC_TYPES, max_frame_bytes=RESYNC_REQUEST_BYTES)
            except CodecError:
                self.resync_counters["bad_requests"] += 1
                continue
            self.resync_counters["requests"] += 1
            if time.monotonic() - last_served < self.resync_min_interval_s:
                self.resync_counters["throttled"] += 1
                continue
            try:
                update = self.resync_update()
                if update is None:
                    continue  # nothing published yet: the subscriber asks again later
                header, payload = update
                extra = {k: v for k, v in header.items() if k not in ("version", "step")}
                msg = chunk_messages(payload, version=header["version"], step=header["step"], algo=self.algo,
                                     chunk_bytes=max(1, len(payload)), publisher=self.publisher_id, extra=extra)[0]
                link.send(msg, peer)
                last_served = time.monotonic()
                self.resync_counters["served"] += 1
            except Exception as e:  # a failed reply must not end the endpoint
                self.resync_counters["failed"] += 1
                log.warning("weight resync reply failed: %s: %s", type(e).__name__, e)
        link.close()

    def _send(self, payload: np.ndarray, version: int, step: int, *, subset: bool = False,
              extra: dict[str, Any] | None = None) -> dict[str, Any]:
        msgs = chunk_messages(payload, version=version, step=step, algo=self.algo, chunk_bytes=self.chunk_bytes,
                              publisher=self.publisher_id, subset=subset, extra=extra)
        with self._lock:
            for frames in msgs:
                self.link.send(frames)
            self.version = int(version)
            self.published += 1
            # references, not copies: the payload buffer is this update's own and never changes
            self._last_frames = [list(frames) for frames in msgs] if self.resends_per_update else []
            self._resends_left = self.resends_per_update
        log.info("published weights version %d (step %d, %.1f MB, %d chunks)", version, step, len(payload) / 1e6, len(msgs))
        return {"version": int(version), "bytes": len(payload), "chunks": len(msgs)}

    def _heartbeat(self, period_s: float) -> None:
        while not self._closed.wait(period_s):
            with self._lock:
                if self._closed.is_set():
                    break
                beat = {"type": "heartbeat", "publisher": self.publisher_id, "version": self.version, "time_s": time.time()}
                if self._base is not None and self.resync_port:
                    beat.update(resync_port=self.resync_port, base_id=self._base[1])
                self.link.send(encode(beat))
                if self._resends_left > 0:
                    self._resends_left -= 1
                    for frames in self._last_frames:
                        self.link.send(frames)

    def close(self) -> None:
        # A learner that stops right after publishing keeps re-sending its final update for
        # ``close_linger_s`` first, so a subscriber that is still (re)connecting gets it: the
        # linger exceeds the subscribers' maximum reconnect back-off (2 s, links.ZmqLink).
        if self._last_frames:
            with self._lock:
                self._resends_left = max(self._resends_left, math.ceil(self.close_linger_s / self._hb_period_s))
        deadline = time.monotonic() + self._resends_left * self._hb_period_s + 0.2
        while self._resends_left > 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        self._closed.set()
        self._hb.join(2.0)
        if self._resync_thread is not None:
            self._resync_thread.join(2.0)
        with self._lock:
            self.link.close()

    def __enter__(self) -> "WeightPublisher":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class WeightSubscriber:
    """Follows a weight bus for ``target`` (a ``types.WeightUpdatable``) in a background thread.

    Validated updates are staged; ``apply_pending()`` installs the newest one via
    ``target.load_weights(weights, version)`` and must be called at a boundary by the owner.
    """

    def __init__(self, endpoint: str, target: Any, *, curve: CurveKeys | None = None, allow_subset: bool = False,
                 heartbeat_s: float = 0.5, max_total_bytes: int = 4 * 1024**3, initial_version: int | None = None,
                 link_factory: Callable[[], Link] | None = None) -> None:
        self.endpoint, self.target, self.allow_subset = endpoint, target, allow_subset
        self._curve, self._max_total_bytes, self._heartbeat_s = curve, max_total_bytes, heartbeat_s
        self.link: Link = (link_factory or (lambda: ZmqLink("sub", endpoint, curve=curve, hwm=100000,
                                                            max_frame_bytes=max_total_bytes, heartbeat_s=heartbeat_s)))()
        self.assembler = WeightAssembler(max_total_bytes)
        meta_version = getattr(target, "metadata", {}).get("policy_version", -1) if hasattr(target, "metadata") else -1
        self.applied_version = int(meta_version if initial_version is None else initial_version)
        self._accepted_version = self.applied_version
        self.publisher = Liveness("weight publisher", 3 * heartbeat_s)
        self.counters = {"updates_received": 0, "accepted": 0, "applied": 0, "bad_frames": 0, "deltas": 0, "gaps": 0,
                         "resync_requests": 0, "resyncs": 0}
        self.rejected = {r: 0 for r in REJECT_REASONS}
        # delta mode: the base id of the newest accepted update (None: not known yet, computed from
        # the target when a delta first needs it); the publisher's resync endpoint from its heartbeat
        self._accepted_base_id: str | None = None
        self._advert: tuple[int, str] | None = None  # (resync_port, base_id) announced by the publisher
        self._resync_link: Link | None = None
        self._resync_port = 0
        self._resync_asked_s = -math.inf
        self.resync_retry_s = 10.0  # ask again when no answer came (the publisher may be serialising GBs)
        self._need_resync = False
        self.last_update: dict[str, Any] = {}  # version, kind (full|delta), bytes, resync of the newest accepted
        self.last_error = ""
        self.last_latency_s = float("nan")  # publisher send -> staged (wall clocks; same host only)
        self._staged: tuple[int, int, dict[str, np.ndarray], str] | None = None  # version, step, arrays, kind
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._run, name="weights-sub", daemon=True)
        self._thread.start()

    @property
    def publisher_alive(self) -> bool:
        return any(p["alive"] for p in self.publisher.status().values())

    def apply_pending(self) -> bool:
        """Install the newest staged update (call between infer calls). True if one was installed."""
        if self._staged is None:
            return False
        with self._lock:
            staged, self._staged = self._staged, None
        if staged is None:
            return False
        version, step, arrays, kind = staged
        try:
            if kind == "delta":
                self.target.load_delta(arrays, version)
            else:
                self.target.load_weights(arrays, version)
        except Exception as e:  # the target refused: keep serving what it had
            self._reject("load", f"target.load_weights refused version {version}: {type(e).__name__}: {e}")
            return False
        self.applied_version = version
        self.counters["applied"] += 1
        log.info("weights version %d (step %d, %s) installed", version, step, kind)
        return True

    def _run(self) -> None:
        while not self._closed.is_set():
            got = self.link.recv(0.05)
            done = None
            while got is not None:  # drain what is queued, keep only the newest complete update
                try:
                    new = self._handle(got[1])
                    if new is not None:
                        if done is not None:  # two complete updates queued: validate only the newer
                            self.assembler.dropped["superseded"] += 1
                        if done is None or new[0]["version"] >= done[0]["version"]:
                            done = new
                except Exception as e:  # never let one bad message stop the bus
                    self.counters["bad_frames"] += 1
                    log.warning("weight bus: message dropped: %s: %s", type(e).__name__, e)
                got = self.link.recv(0.0) if not self._closed.is_set() else None
            if done is not None:
                try:
                    self._validate(*done)
                except Exception as e:  # a header no check foresaw must not end the bus thread
                    self._reject("format", f"update header unusable: {type(e).__name__}: {e}"[:300])
            try:
                self._poll_resync()
            except Exception as e:
                self.counters["bad_frames"] += 1
                log.warning("weight resync: %s: %s", type(e).__name__, e)
            self.publisher.check()
        self.link.close()
        if self._resync_link is not None:
            self._resync_link.close()

    # ------------------------------------------------------------------ delta mode: resync
    def _held_base_id(self) -> str | None:
        if self._accepted_base_id is None and callable(getattr(self.target, "base_id", None)):
            self._accepted_base_id = str(self.target.base_id())
        return self._accepted_base_id

    def _poll_resync(self) -> None:
        """Ask the publisher for base + delta when the base we hold is not the one it announces
        (or a delta did not match it); take in its answer."""
        if self._advert is not None and callable(getattr(self.target, "load_delta", None)):
            port, base_id = self._advert
            if base_id != self._held_base_id():
                self._need_resync = True
            if port != self._resync_port:  # (re)started publisher: new endpoint
                if self._resync_link is not None:
                    self._resync_link.close()
                host = self.endpoint.rsplit(":", 1)[0]
                self._resync_link = ZmqLink("dealer", f"{host}:{port}", curve=self._curve, hwm=4,
                                            max_frame_bytes=self._max_total_bytes, heartbeat_s=self._heartbeat_s)
                self._resync_port, self._resync_asked_s = port, -math.inf
        if self._resync_link is None:
            return
        now = time.monotonic()
        if self._need_resync and now - self._resync_asked_s > self.resync_retry_s:
            try:
                self._resync_link.send(encode({"type": "resync", "have_base_id": self._accepted_base_id or ""}))
                self.counters["resync_requests"] += 1
                self._resync_asked_s = now
                log.info("weight bus: asking %s:%d for the base (ours differs from the publisher's)",
                         self.endpoint.rsplit(":", 1)[0], self._resync_port)
            except Exception as e:  # LinkBusy: the endpoint is not up yet; try again next round
                log.debug("resync request not sent: %s", e)
        got = self._resync_link.recv(0.0)
        if got is None:
            return
        try:
            msg = decode(got[1], allowed_types=WEIGHT_TYPES, max_frame_bytes=self._max_total_bytes)
        except CodecError as e:
            self.counters["bad_frames"] += 1
            log.warning("weight resync: malformed reply dropped: %s", e)
            return
        data = msg.pop("data", None)
        if msg.get("type") != "weights" or not isinstance(data, np.ndarray) or data.dtype != np.uint8 or \
                msg.get("n_chunks") != 1 or msg.get("total_bytes") != data.nbytes or not msg.get("resync"):
            self.counters["bad_frames"] += 1
            return
        self._resync_asked_s = -math.inf if self._need_resync else self._resync_asked_s
        self._validate(msg, data)

    def _handle(self, frames: list[Any]) -> tuple[dict[str, Any], np.ndarray] | None:
        try:
            msg = decode(frames, allowed_types=WEIGHT_TYPES, max_frame_bytes=self.assembler.max_total_bytes)
        except CodecError as e:
            self.counters["bad_frames"] += 1
            log.warning("weight bus: malformed message dropped: %s", e)
            return None
        publisher = msg.get("publisher")
        if type(publisher) is not str or not 0 < len(publisher) <= 64:
            self.counters["bad_frames"] += 1
            log.warning("weight bus: message without a publisher id (a string of 1-64 characters) dropped")
            return None
        self.publisher.beat(publisher)
        if msg["type"] == "heartbeat":
            port, base_id = msg.get("resync_port"), msg.get("base_id")
            if type(port) is int and 0 < port < 65536 and type(base_id) is str and 0 < len(base_id) <= 128:
                self._advert = (port, base_id)
            return None
        return self.assembler.feed(msg)

    def _validate(self, header: dict[str, Any], payload: np.ndarray) -> None:
        self.counters["updates_received"] += 1
        version = header.get("version")
        kind = header.get("kind", "full")
        base_id = header.get("base_id") or None
        if base_id is not None and base_id == self._accepted_base_id and isinstance(version, int) and \
                (version == self._accepted_version or (header.get("resync") and version < self._accepted_version)):
            # what we hold already: a bus re-send of the delta a resync brought, or the answer to a
            # request repeated (or made for a base that matched after all)
            self.counters["duplicates"] = self.counters.get("duplicates", 0) + 1
            if header.get("resync"):
                self._need_resync = False
            return
        seen = (version, str(header.get("checksum"))[:200])
        if seen == getattr(self, "_last_seen", None):  # a re-send for late joiners, judged already
            self.counters["duplicates"] = self.counters.get("duplicates", 0) + 1
            return
        if not header.get("resync"):  # (a resync answer arrives on its own channel: it must not
            self._last_seen = seen    # make the bus's next re-send look new)
        try:
            if kind not in ("full", "delta") or (base_id is not None and type(base_id) is not str):
                raise WeightRejected("format", f"unknown update kind {str(kind)[:20]!r} (full or delta)")
            if not isinstance(version, int) or version <= self._accepted_version:
                raise WeightRejected("version", f"version {version} is not newer than {self._accepted_version}; "
                                                "a restarted learner must continue its version count")
            if kind == "delta" or base_id is not None:
                self._check_adapter(header)
            if kind == "delta":
                arrays = self._validate_delta(payload, header, base_id)
            else:
                arrays = validate_update(payload, header, self.target.weight_spec(), allow_subset=self.allow_subset)
                if base_id is not None:  # prove the base: recompute its id from the tensors received
                    delta_names = set(self.target.delta_spec())
                    got = compute_base_id({k: v for k, v in arrays.items() if k not in delta_names}, header["adapter"])
                    if got != base_id:
                        raise WeightRejected("base_mismatch", f"full update v{version}: its base tensors hash to "
                                                              f"{got[:12]}…, the header claims {base_id[:12]}…")
        except WeightRejected as e:
            self._reject(e.reason, str(e))
            return
        except Exception as e:  # e.g. the target's weight_spec() failed: never kill the bus thread
            self._reject("load", f"cannot validate version {version}: {type(e).__name__}: {e}")
            return
        with self._lock:
            staged = self._staged
            if kind == "delta" and staged is not None and staged[3] == "full":
                arrays, kind = {**staged[2], **arrays}, "full"  # a base still waiting to be installed
            self._staged = (version, int(header.get("step", -1)), arrays, kind)
            self._accepted_version = version
            if header.get("kind", "full") == "full":
                self._accepted_base_id = base_id
        self.last_update = {"version": version, "kind": str(header.get("kind", "full")), "bytes": int(len(payload)),
                            "resync": bool(header.get("resync"))}
        if header.get("resync"):
            self.counters["resyncs"] += 1
            self._need_resync = False
        self.counters["accepted"] += 1
        sent = header.get("sent_time_s")
        self.last_latency_s = time.time() - sent if isinstance(sent, float) and math.isfinite(sent) else float("nan")

    def _check_adapter(self, header: dict[str, Any]) -> None:
        info = getattr(self.target, "adapter_info", None)
        if not callable(info) or not callable(getattr(self.target, "load_delta", None)):
            raise WeightRejected("format", "a delta/base update arrived but this policy cannot load deltas "
                                           "(serve a policy with load_delta(), e.g. policy=vla)")
        mine, theirs = info(), header.get("adapter")
        if mine != theirs:
            raise WeightRejected("rank_mismatch", f"update v{header.get('version')} was made for adapter "
                                                  f"{str(theirs)[:200]}, this policy has {mine}; serve with the "
                                                  "learner's learner.finetune/lora_rank/lora_alpha/lora_targets")

    def _validate_delta(self, payload: Any, header: dict[str, Any], base_id: str | None) -> dict[str, np.ndarray]:
        held = self._held_base_id()
        if base_id is None or base_id != held:
            self._need_resync = True  # the base we hold is not this delta's: fetch base + delta
            raise WeightRejected("base_mismatch", f"delta v{header.get('version')} is for base {str(base_id)[:12]}…, "
                                                  f"this policy holds {str(held)[:12]}…; resyncing the base")
        arrays = validate_update(payload, header, self.target.delta_spec())
        prev = header.get("prev_version")
        if isinstance(prev, int) and prev != self._accepted_version:
            self.counters["gaps"] += 1  # missed versions: harmless, a delta carries absolute values
        self.counters["deltas"] += 1
        keep_update_buffers()
        return arrays

    def _reject(self, reason: str, message: str) -> None:
        self.rejected[reason] = self.rejected.get(reason, 0) + 1
        self.last_error = message
        log.warning("weight update rejected (%s): %s; keeping version %d", reason, message, self.applied_version)

    def status(self) -> dict[str, Any]:
        return {"endpoint": self.endpoint, "applied_version": self.applied_version, "publisher_alive": self.publisher_alive,
                "publishers": self.publisher.status(), "counters": dict(self.counters),
                "rejected": {k: v for k, v in self.rejected.items() if v}, "dropped": dict(self.assembler.dropped),
                "last_error": self.last_error, "base_id": (self._accepted_base_id or "")[:16],
                "last_update": dict(self.last_update)}

    def close(self) -> None:
        self._closed.set()
        self._thread.join(5.0)

    def __enter__(self) -> "WeightSubscriber":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class HotSwapPolicy:
    """Wrap an in-process policy so staged weight updates are installed before each ``infer``
    (i.e. at chunk boundaries). Same interface as the wrapped policy."""

    def __init__(self, policy: Any, subscriber: WeightSubscriber) -> None:
        self.policy, self.subscriber = policy, subscriber

    def infer(self, obs: dict[str, Any]) -> dict[str, Any]:
        self.subscriber.apply_pending()
        return self.policy.infer(obs)

    def reset(self) -> None:
        self.policy.reset()

    @property
    def metadata(self) -> dict[str, Any]:
        return self.policy.metadata
