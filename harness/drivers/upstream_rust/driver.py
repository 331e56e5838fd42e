"""faultline driver for the upstream LiveKit Rust SDK (driver protocol version 2).

faultline does not link the upstream Rust SDK; it reaches it through the PyPI
``livekit`` wheel, which ships the SDK compiled as ``liblivekit_ffi.so`` together
with a thin Python API (``livekit.rtc``). This program owns one ``rtc.Room``,
reads faultline's commands from stdin and writes replies and SDK events to
stdout, one JSON object per line, as described in docs/driver-protocol.md.

It only translates: it never retries, never decides what a reconnect is and
reports every SDK event it is given. Everything else (Python logging and the
SDK's own logs, forwarded by the FFI) goes to stderr. The access token arrives
on stdin and is scrubbed from every log line and error message.

Media (protocol 2): ``publish_track`` feeds a synthetic 400 Hz tone (48 kHz mono,
20 ms frames) or a moving 320x180 I420 picture (30 fps, one layer) from an
asyncio task, across reconnects, until unpublished (nothing while muted). Every
subscribed remote track is consumed like an application would (AudioStream /
VideoStream), and the ``media`` counters come from that receiver's inbound-rtp
stats: audio = (totalSamplesReceived - concealedSamples) in 10 ms units, video
= framesReceived / framesDecoded. The AudioStream is no measure: it delivers
10 ms every 10 ms even when no packet arrives (measured: it kept counting while
the publisher was SIGSTOPped; the stats did not).

Environment (all optional):
  FAULTLINE_DRIVER_LOG         Python log level for stderr (default INFO; DEBUG also
                               logs both media counters side by side every 100 ms)
  FAULTLINE_CONNECT_TIMEOUT_S  bound on one ``connect`` command (default 20)
  FAULTLINE_MEDIA_COUNTER      "stats" (default) or "stream" (frames the streams
                               delivered; for comparison only: audio never stops)
  LIVEKIT_RTC_DEBUG=1          let the SDK's debug-level logs through (wheel feature)
  LIVEKIT_LIB_PATH             load another liblivekit_ffi.so (wheel feature)
"""

import asyncio
import base64
import json
import logging
import os
import re
import sys
import threading
import time

PROTOCOL_VERSION = 2
SDK_NAME = "upstream-rust"
EOF_EXIT_DEADLINE_S = 4.5
DISCONNECT_TIMEOUT_S = 10.0


# --------------------------------------------------------------------------
# stdout is the protocol channel. Keep a private copy of it and point fd 1 at
# stderr, so nothing else (the native library, a stray print) can write a
# non-protocol line onto it.
# --------------------------------------------------------------------------
_proto_fd = os.dup(1)
os.dup2(2, 1)
sys.stdout = sys.stderr
_proto_out = os.fdopen(_proto_fd, "wb", buffering=0)
_out_lock = threading.Lock()
_out_broken = threading.Event()


# --------------------------------------------------------------------------
# Secret scrubbing for logs and error strings.
# --------------------------------------------------------------------------
_secrets = set()
_secrets_lock = threading.Lock()
_JWT_RE = re.compile(r"eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]+")
_QUERY_TOKEN_RE = re.compile(r"(access_token=)[^&\s\"']+")


def remember_secret(value):
    if value:
        with _secrets_lock:
            _secrets.add(value)


def scrub(text):
    if not isinstance(text, str):
        text = str(text)
    with _secrets_lock:
        secrets = list(_secrets)
    for s in secrets:
        if s in text:
            text = text.replace(s, "<redacted>")
    text = _QUERY_TOKEN_RE.sub(r"\1<redacted>", text)
    return _JWT_RE.sub("<redacted-jwt>", text)


class _ScrubbingFormatter(logging.Formatter):
    def format(self, record):
        return scrub(super().format(record))

    def formatException(self, ei):
        return scrub(super().formatException(ei))


def _setup_logging():
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        _ScrubbingFormatter("%(asctime)s.%(msecs)03d %(levelname)s %(name)s: %(message)s", "%H:%M:%S")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    level = os.environ.get("FAULTLINE_DRIVER_LOG", "INFO").strip().upper() or "INFO"
    root.setLevel(getattr(logging, level, logging.INFO))


_setup_logging()
log = logging.getLogger("faultline.driver")

# Import the SDK only after stdout is protected and logging goes to stderr.
import numpy as np  # noqa: E402
from livekit import rtc  # noqa: E402
from livekit.rtc._proto import participant_pb2, room_pb2, track_pb2  # noqa: E402


# --------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------
def emit(obj):
    """Writes one protocol line; lines never interleave."""
    line = (json.dumps(obj, separators=(",", ":"), ensure_ascii=False) + "\n").encode("utf-8")
    with _out_lock:
        if _out_broken.is_set():
            return
        try:
            _proto_out.write(line)
            _proto_out.flush()
        except (BrokenPipeError, OSError) as e:
            _out_broken.set()
            log.warning("stdout is gone (%s); nothing more can be reported", e)


def emit_event(name, **fields):
    obj = {"type": "event", "event": name}
    obj.update(fields)
    log.info("event %s", name if not fields else "%s %s" % (name, _brief(fields)))
    emit(obj)


def _brief(fields):
    f = dict(fields)
    if "payload" in f:
        f["payload"] = "<%d b64 chars>" % len(f["payload"])
    return json.dumps(f, ensure_ascii=False)


def reply(cmd_id, ok=True, error=None, unsupported=False, **extra):
    obj = {"type": "reply", "id": cmd_id, "ok": ok}
    if not ok:
        obj["error"] = scrub(error or "failed")
        if unsupported:
            obj["unsupported"] = True
    obj.update(extra)
    if ok:
        log.info("reply %s ok", cmd_id)
    else:
        log.info("reply %s failed: %s%s", cmd_id, obj["error"], " (unsupported)" if unsupported else "")
    emit(obj)


# --------------------------------------------------------------------------
# Versions
# --------------------------------------------------------------------------
def sdk_version():
    v = getattr(rtc, "__version__", None)
    if v:
        return v
    try:
        from importlib.metadata import version

        return version("livekit")
    except Exception:
        return "unknown"


def library_identity():
    """Which native library ran: the wheel's own, or LIVEKIT_LIB_PATH's with the start of its SHA-256."""
    import hashlib

    path = os.environ.get("LIVEKIT_LIB_PATH", "").strip()
    if not path:
        return "the wheel's own library"
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return "local library %s sha256:%s" % (path, digest.hexdigest()[:12])


def ffi_version():
    """The native library's own version via its UniFFI `build_version` export, if present."""
    import ctypes

    try:
        from livekit.rtc._ffi_client import get_ffi_lib

        lib = get_ffi_lib()
        fn = lib.uniffi_livekit_ffi_fn_func_build_version
        free = lib.ffi_livekit_ffi_rustbuffer_free
        contract = lib.ffi_livekit_ffi_uniffi_contract_version
    except Exception as e:
        log.debug("no ffi version export: %s", e)
        return None

    class RustBuffer(ctypes.Structure):
        _fields_ = [
            ("capacity", ctypes.c_uint64),
            ("len", ctypes.c_uint64),
            ("data", ctypes.POINTER(ctypes.c_uint8)),
        ]

    class RustCallStatus(ctypes.Structure):
        _fields_ = [("code", ctypes.c_int8), ("error_buf", RustBuffer)]

    try:
        contract.restype = ctypes.c_uint32
        contract.argtypes = []
        # RustBuffer {u64 capacity, u64 len, *u8 data} is the layout of UniFFI contracts 24..30
        if not 24 <= contract() <= 30:
            return None
        fn.restype = RustBuffer
        fn.argtypes = [ctypes.POINTER(RustCallStatus)]
        free.restype = None
        free.argtypes = [RustBuffer, ctypes.POINTER(RustCallStatus)]
        status = RustCallStatus()
        buf = fn(ctypes.byref(status))
        if status.code != 0:
            return None
        text = ctypes.string_at(buf.data, buf.len).decode("utf-8", "replace")
        free(buf, ctypes.byref(RustCallStatus()))
        return text
    except Exception as e:
        log.debug("ffi version call failed: %s", e)
        return None


# --------------------------------------------------------------------------
# Enum mapping (read from the wheel's generated protobuf modules)
# --------------------------------------------------------------------------
def disconnect_reason_name(value):
    try:
        return participant_pb2.DisconnectReason.Name(int(value))
    except (ValueError, TypeError):
        log.warning("unknown DisconnectReason value %r", value)
        return None


_CONNECTION_STATES = {
    room_pb2.ConnectionState.Value("CONN_CONNECTED"): "connected",
    room_pb2.ConnectionState.Value("CONN_RECONNECTING"): "reconnecting",
    room_pb2.ConnectionState.Value("CONN_DISCONNECTED"): "disconnected",
}

# faultline's scenario spellings (driver protocol v1); each is looked up in the
# SDK's SimulateScenarioKind as SIMULATE_<NAME>, so the wheel decides what exists.
FAULTLINE_SCENARIOS = (
    "signal-reconnect",
    "full-reconnect",
    "disconnect-signal-on-resume",
    "disconnect-signal-on-resume-no-messages",
    "node-failure",
    "migration",
    "server-leave",
    "force-tcp",
    "force-tls",
    "speaker",
)
# The SDK's Speaker scenario always asks the server for a 3 s speaker update.
SDK_SPEAKER_SECS = 3


def simulate_kind(scenario):
    name = "SIMULATE_" + scenario.upper().replace("-", "_")
    try:
        return room_pb2.SimulateScenarioKind.Value(name)
    except ValueError:
        return None


# --------------------------------------------------------------------------
# Media (protocol 2)
# --------------------------------------------------------------------------
# faultline's source names <-> the SDK's TrackSource.
_SOURCES = {
    "microphone": track_pb2.TrackSource.Value("SOURCE_MICROPHONE"),
    "camera": track_pb2.TrackSource.Value("SOURCE_CAMERA"),
}
_SOURCE_NAMES = {v: k for k, v in _SOURCES.items()}

AUDIO_RATE = 48000
AUDIO_CHANNELS = 1
AUDIO_FRAME_MS = 20
TONE_HZ = 400  # 120 samples a period: a 20 ms frame holds exactly 8 periods
VIDEO_WIDTH = 320
VIDEO_HEIGHT = 180
VIDEO_FPS = 30
# The SDK derives a default encoding from the resolution, and its 320x180 preset
# (H180: 320x180, 160 kbps, 15 fps) caps the frame rate at 15 fps (measured: 15
# frames/s arrived): ask for the protocol's 30 fps explicitly.
VIDEO_MAX_BITRATE = 300_000
MEDIA_REPORT_INTERVAL_S = 0.1
STATS_TIMEOUT_S = 0.5
# Where `media` counters come from: "stats" (the receiver's inbound-rtp stats) or
# "stream" (frames the SDK's Audio/VideoStream delivers). See Subscription.
MEDIA_COUNTER_DEFAULT = "stats"
# A feeder that falls this far behind its schedule (the process was stopped,
# the loop was busy) restarts its schedule instead of sending a burst.
FEED_MAX_LAG_S = 0.2


def source_name(value):
    name = _SOURCE_NAMES.get(value)
    if name is not None:
        return name
    try:
        return track_pb2.TrackSource.Name(int(value)).replace("SOURCE_", "").lower()
    except (ValueError, TypeError):
        return "unknown"


class LocalMedia:
    """One synthetic local track: its source, the task feeding it, its publication."""

    def __init__(self, loop, source):
        self.loop = loop
        self.source = source
        self.kind = "audio" if source == "microphone" else "video"
        self.muted = False
        self.publication = None
        self.feeder = None
        self._errors = 0
        if self.kind == "audio":
            self.rtc_source = rtc.AudioSource(AUDIO_RATE, AUDIO_CHANNELS, loop=loop)
            self.track = rtc.LocalAudioTrack.create_audio_track("faultline-" + source, self.rtc_source)
        else:
            self.rtc_source = rtc.VideoSource(VIDEO_WIDTH, VIDEO_HEIGHT)
            self.track = rtc.LocalVideoTrack.create_video_track("faultline-" + source, self.rtc_source)

    def publish_options(self):
        opts = rtc.TrackPublishOptions(source=_SOURCES[self.source])
        if self.kind == "video":
            # Python's default is simulcast; the protocol asks for one layer.
            opts.simulcast = False
            opts.video_encoding.max_framerate = float(VIDEO_FPS)
            opts.video_encoding.max_bitrate = VIDEO_MAX_BITRATE
        return opts

    def start(self):
        run = self._feed_audio if self.kind == "audio" else self._feed_video
        self.feeder = self.loop.create_task(run())

    async def close(self):
        if self.feeder is not None:
            self.feeder.cancel()
            try:
                await self.feeder
            except BaseException:
                pass
            self.feeder = None
        try:
            await self.rtc_source.aclose()
        except Exception as e:
            log.debug("closing the %s source: %s", self.source, e)

    def _feed_error(self, e):
        self._errors += 1
        if self._errors <= 3 or self._errors % 100 == 0:
            log.warning("feeding %s failed (%d so far): %s", self.source, self._errors, e)

    async def _paced(self, period, step):
        """Calls step() every period seconds (skipped while muted), on an absolute schedule."""
        due = self.loop.time()
        while True:
            if not self.muted:
                try:
                    await step()
                except asyncio.CancelledError:
                    raise
                except Exception as e:
                    self._feed_error(e)
            due += period
            now = self.loop.time()
            if now - due > FEED_MAX_LAG_S:
                due = now
            await asyncio.sleep(max(0.0, due - now))

    async def _feed_audio(self):
        n = AUDIO_RATE * AUDIO_FRAME_MS // 1000
        t = np.arange(n * AUDIO_CHANNELS) // AUDIO_CHANNELS
        samples = (0.3 * 32767 * np.sin(2 * np.pi * TONE_HZ * t / AUDIO_RATE)).astype(np.int16)
        frame = rtc.AudioFrame(samples.tobytes(), AUDIO_RATE, AUDIO_CHANNELS, n)

        async def step():
            await self.rtc_source.capture_frame(frame)

        await self._paced(AUDIO_FRAME_MS / 1000.0, step)

    async def _feed_video(self):
        w, h = VIDEO_WIDTH, VIDEO_HEIGHT
        gradient = (np.arange(w, dtype=np.uint16)[None, :] * 255 // (w - 1)).astype(np.uint8).repeat(h, axis=0)
        chroma = np.full(2 * (w // 2) * (h // 2), 128, dtype=np.uint8)
        count = [0]

        async def step():
            i = count[0]
            count[0] += 1
            y = np.roll(gradient, (i * 4) % w, axis=1)  # a gradient moving right, 4 px a frame
            x0 = (i * 2) % (w - 16)
            y[:, x0 : x0 + 16] = 235  # and a bright bar moving slower
            chroma[:] = (i * 3) % 256  # and changing colour
            data = np.concatenate((y.reshape(-1), chroma)).tobytes()
            self.rtc_source.capture_frame(rtc.VideoFrame(w, h, rtc.VideoBufferType.I420, data))

        await self._paced(1.0 / VIDEO_FPS, step)


class _PerStream:
    """A stats counter summed over a receiver's RTP streams (by SSRC), never going back.

    Each stream contributes the largest value seen for it: libwebrtc corrects
    concealed_samples after the fact, so received-minus-concealed can dip briefly.
    """

    def __init__(self):
        self.best = {}

    def update(self, ssrc, raw):
        if raw > self.best.get(ssrc, 0):
            self.best[ssrc] = raw

    @property
    def value(self):
        return sum(self.best.values())


class Subscription:
    """A remote track this client is subscribed to, and what it has delivered.

    The track is consumed through an Audio/VideoStream (so it is decoded and
    played out as in an application) and its receiver's stats are polled; see
    the module docstring for why the stats are what `media` reports.
    """

    def __init__(self, loop, track, publication, participant, carried):
        self.loop = loop
        self.track = track
        self.sid = publication.sid
        self.sender = participant.identity
        self.source = source_name(publication.source)
        self.kind = "video" if publication.kind == track_pb2.TrackKind.Value("KIND_VIDEO") else "audio"
        # Counters of an earlier subscription of the same sid: they never go back.
        self.base_frames, self.base_decoded = carried
        # from the stream: video frames delivered (decoded), audio samples delivered
        self.stream_frames = 0
        self.stream_samples = 0
        self.stream_rate = AUDIO_RATE
        # from the receiver's inbound-rtp stats
        self.stats_received = _PerStream()  # video frames received / audio samples not concealed
        self.stats_decoded = _PerStream()
        self.task = loop.create_task(self._consume())

    async def _consume(self):
        stream = None
        try:
            if self.kind == "video":
                stream = rtc.VideoStream.from_track(track=self.track, loop=self.loop)
                async for _ in stream:
                    self.stream_frames += 1
            else:
                stream = rtc.AudioStream.from_track(
                    track=self.track, loop=self.loop, sample_rate=AUDIO_RATE, num_channels=AUDIO_CHANNELS
                )
                async for ev in stream:
                    self.stream_rate = ev.frame.sample_rate or AUDIO_RATE
                    self.stream_samples += ev.frame.samples_per_channel
            log.info("media stream of %s/%s (%s) ended", self.sender, self.source, self.sid)
        except asyncio.CancelledError:
            pass
        except Exception as e:
            log.warning("media stream of %s/%s (%s) failed: %s", self.sender, self.source, self.sid, e)
        finally:
            if stream is not None:
                try:
                    await stream.aclose()
                except BaseException as e:
                    log.debug("closing the stream of %s: %s", self.sid, e)

    async def poll_stats(self):
        try:
            # bounded: a stats request stuck in the SDK must not stop the reports
            stats = await asyncio.wait_for(self.track.get_stats(), STATS_TIMEOUT_S)
        except Exception as e:
            log.debug("stats of %s: %s", self.sid, e)
            return
        for s in stats:
            if s.WhichOneof("stats") != "inbound_rtp":
                continue
            ssrc = s.inbound_rtp.stream.ssrc
            ib = s.inbound_rtp.inbound
            if self.kind == "video":
                self.stats_received.update(ssrc, ib.frames_received)
                self.stats_decoded.update(ssrc, ib.frames_decoded)
            else:
                self.stats_received.update(ssrc, ib.total_samples_received - ib.concealed_samples)

    def counts(self, counter):
        """(frames, decoded) since subscribed, from the chosen counter."""
        if counter == "stats":
            if self.kind == "video":
                return self.stats_received.value, self.stats_decoded.value
            return self.stats_received.value * 100 // AUDIO_RATE, None
        if self.kind == "video":
            return self.stream_frames, self.stream_frames
        return self.stream_samples * 100 // self.stream_rate, None

    def report(self, counter):
        frames, decoded = self.counts(counter)
        entry = {"from": self.sender, "source": self.source, "sid": self.sid, "frames": self.base_frames + frames}
        if decoded is not None:
            entry["decoded"] = self.base_decoded + decoded
        return entry

    async def close(self):
        self.task.cancel()
        try:
            await self.task
        except BaseException:
            pass


# --------------------------------------------------------------------------
# Room
# --------------------------------------------------------------------------
class _Room(rtc.Room):
    """rtc.Room that notes the raw sender identity of each event it dispatches.

    The Python layer resolves a data packet's sender to a RemoteParticipant and
    passes None when that lookup fails; the raw identity from the FFI event is
    kept so `from` is never lost. Active speakers are reported from the raw
    identities too (the Python layer asserts on an unknown one and drops the event).
    """

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.last_data_identity = None
        # set when a connect was given up on: its events are logged, not reported
        self.abandoned = False

    def report(self, name, **fields):
        if self.abandoned:
            log.info("(abandoned room) event %s", name)
            return
        emit_event(name, **fields)

    def _on_room_event(self, event):
        which = event.WhichOneof("message")
        if which not in ("connection_quality_changed", "participants_updated"):
            log.debug("room event %s", which)
        if which == "data_packet_received":
            self.last_data_identity = event.data_packet_received.participant_identity or None
        elif which == "active_speakers_changed":
            self.report(
                "active_speakers_changed",
                speakers=list(event.active_speakers_changed.participant_identities),
            )
        elif which == "connection_state_changed":
            log.info(
                "sdk connection state -> %s",
                room_pb2.ConnectionState.Name(event.connection_state_changed.state),
            )
        elif which in ("room_sid_changed", "moved", "token_refreshed"):
            log.info("sdk room event %s", which)
        super()._on_room_event(event)


class Driver:
    def __init__(self, loop):
        self.loop = loop
        self.room = None
        self.connecting = False
        self.lifecycle = asyncio.Lock()
        self.tasks = set()
        self.connect_timeout = float(os.environ.get("FAULTLINE_CONNECT_TIMEOUT_S", "20"))
        # media (protocol 2)
        self.local = {}  # source -> LocalMedia
        self.subs = {}  # track sid -> Subscription
        self.retired = {}  # track sid -> (frames, decoded) of an ended subscription
        self.media_task = None
        self.media_reports = 0
        counter = os.environ.get("FAULTLINE_MEDIA_COUNTER", MEDIA_COUNTER_DEFAULT).strip().lower()
        self.counter = counter if counter in ("stats", "stream") else MEDIA_COUNTER_DEFAULT

    # ---- events ---------------------------------------------------------
    def _attach(self, room):
        def on_reconnecting():
            room.report("reconnecting")

        def on_reconnected():
            room.report("reconnected")

        def on_disconnected(reason=None):
            name = disconnect_reason_name(reason) if reason is not None else None
            if name is None:
                room.report("disconnected", reason="UNKNOWN_REASON", reason_code=reason)
            else:
                room.report("disconnected", reason=name)
            if room is self.room:
                self._spawn(self._stop_media())

        def on_participant_connected(p):
            room.report("participant_connected", identity=p.identity, sid=p.sid)

        def on_participant_disconnected(p):
            room.report("participant_disconnected", identity=p.identity, sid=p.sid)

        def on_data_received(pkt):
            sender = pkt.participant.identity if pkt.participant is not None else None
            if sender is None:
                sender = room.last_data_identity
            room.last_data_identity = None
            room.report(
                "data_received",
                payload=base64.b64encode(pkt.data).decode("ascii"),
                topic=pkt.topic or None,
                reliable=pkt.kind == room_pb2.DataPacketKind.Value("KIND_RELIABLE"),
                **{"from": sender},
            )

        room.on("reconnecting", on_reconnecting)
        room.on("reconnected", on_reconnected)
        room.on("disconnected", on_disconnected)
        room.on("participant_connected", on_participant_connected)
        room.on("participant_disconnected", on_participant_disconnected)
        room.on("data_received", on_data_received)
        self._attach_media(room)

    def _attach_media(self, room):
        def on_local_track_published(publication, track=None):
            room.report("local_track_published", source=source_name(publication.source), sid=publication.sid)

        def on_local_track_republished(publication, previous_sid):
            room.report(
                "local_track_republished",
                source=source_name(publication.source),
                sid=publication.sid,
                previous_sid=previous_sid,
            )

        def on_local_track_unpublished(publication):
            room.report("local_track_unpublished", source=source_name(publication.source), sid=publication.sid)

        def remote(name):
            def handler(publication, participant):
                room.report(name, source=source_name(publication.source), sid=publication.sid,
                            **{"from": participant.identity})

            return handler

        def on_track_subscribed(track, publication, participant):
            room.report("track_subscribed", source=source_name(publication.source), sid=publication.sid,
                        **{"from": participant.identity})
            if room.abandoned:
                return
            self._retire(publication.sid, "resubscribed")
            carried = self.retired.pop(publication.sid, (0, 0))
            self.subs[publication.sid] = Subscription(self.loop, track, publication, participant, carried)
            self._ensure_media_reporter()

        def on_track_unsubscribed(track, publication, participant):
            room.report("track_unsubscribed", source=source_name(publication.source), sid=publication.sid,
                        **{"from": participant.identity})
            self._retire(publication.sid, "unsubscribed")

        def on_track_subscription_failed(participant, track_sid, error):
            room.report("track_subscription_failed", sid=track_sid, error=error, **{"from": participant.identity})

        def muted(name):
            def handler(participant, publication):
                if isinstance(participant, rtc.LocalParticipant):
                    log.info("sdk %s for the local %s track %s", name, source_name(publication.source), publication.sid)
                    return
                room.report(name, source=source_name(publication.source), **{"from": participant.identity})

            return handler

        room.on("local_track_published", on_local_track_published)
        room.on("local_track_republished", on_local_track_republished)
        room.on("local_track_unpublished", on_local_track_unpublished)
        room.on("track_published", remote("track_published"))
        room.on("track_unpublished", remote("track_unpublished"))
        room.on("track_subscribed", on_track_subscribed)
        room.on("track_unsubscribed", on_track_unsubscribed)
        room.on("track_subscription_failed", on_track_subscription_failed)
        room.on("track_muted", muted("track_muted"))
        room.on("track_unmuted", muted("track_unmuted"))

    # ---- media ----------------------------------------------------------
    def _retire(self, sid, why):
        sub = self.subs.pop(sid, None)
        if sub is None:
            return
        frames, decoded = sub.counts(self.counter)
        self.retired[sid] = (sub.base_frames + frames, sub.base_decoded + (decoded or 0))
        log.info("subscription %s/%s (%s) %s at %s", sub.sender, sub.source, sid, why, self.retired[sid])
        self._spawn(sub.close())

    def _spawn(self, coro):
        task = self.loop.create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    def _ensure_media_reporter(self):
        if self.media_task is None or self.media_task.done():
            self.media_task = self.loop.create_task(self._media_reporter())

    def _sdk_subscribed_sids(self):
        room = self.room
        if room is None:
            return set()
        return {
            pub.sid
            for p in list(room.remote_participants.values())
            for pub in list(p.track_publications.values())
            if pub.subscribed
        }

    async def _media_reporter(self):
        """Every 100 ms while any track is subscribed: one `media` event."""
        due = self.loop.time()
        while True:
            due += MEDIA_REPORT_INTERVAL_S
            now = self.loop.time()
            if now - due > FEED_MAX_LAG_S:
                due = now
            await asyncio.sleep(max(0.0, due - now))
            if self.room is not None and self.subs:
                # A subscription the SDK dropped without an event (its participant left,
                # the room closed) is no longer reported.
                live = self._sdk_subscribed_sids()
                for sid in [s for s in self.subs if s not in live]:
                    self._retire(sid, "gone from the SDK")
            subs = list(self.subs.values())
            if not subs:
                continue
            if self.counter == "stats" or log.isEnabledFor(logging.DEBUG):
                await asyncio.gather(*(s.poll_stats() for s in subs), return_exceptions=True)
                subs = [s for s in subs if self.subs.get(s.sid) is s]
                if not subs:
                    continue
            tracks = sorted((s.report(self.counter) for s in subs), key=lambda t: (t["from"], t["source"], t["sid"]))
            self.media_reports += 1
            if self.media_reports % 20 == 1:
                log.info("event media %s", json.dumps(tracks))
            if log.isEnabledFor(logging.DEBUG):
                log.debug(
                    "media counters (stream vs stats): %s",
                    "; ".join("%s/%s %s vs %s" % (s.sender, s.source, s.counts("stream"), s.counts("stats")) for s in subs),
                )
            emit({"type": "event", "event": "media", "tracks": tracks})

    async def _stop_media(self):
        for sid in list(self.subs):
            self._retire(sid, "closed")
        for media in list(self.local.values()):
            await media.close()
        self.local.clear()

    def _local_media_ready(self, op, cmd_id, cmd):
        source = cmd.get("source")
        if source not in _SOURCES:
            reply(cmd_id, False, "%s: unknown source %r (microphone or camera)" % (op, source), unsupported=True)
            return None
        if not self._connected():
            reply(cmd_id, False, "%s %s: the room is not connected" % (op, source))
            return None
        return source

    async def op_publish_track(self, cmd_id, cmd):
        source = self._local_media_ready("publish_track", cmd_id, cmd)
        if source is None:
            return
        if source in self.local:
            reply(cmd_id, False, "publish_track %s: already published by this driver" % source)
            return
        media = LocalMedia(self.loop, source)
        self.local[source] = media
        media.start()
        try:
            publication = await self.room.local_participant.publish_track(media.track, media.publish_options())
        except Exception as e:
            if self.local.get(source) is media:
                del self.local[source]
            await media.close()
            reply(cmd_id, False, "publish_track %s: %s" % (source, getattr(e, "message", None) or e))
            return
        media.publication = publication
        reply(cmd_id, True, sid=publication.sid)

    async def op_unpublish_track(self, cmd_id, cmd):
        source = self._local_media_ready("unpublish_track", cmd_id, cmd)
        if source is None:
            return
        media = self.local.get(source)
        if media is None or media.publication is None:
            reply(cmd_id, False, "unpublish_track %s: not published by this driver" % source)
            return
        try:
            await self.room.local_participant.unpublish_track(media.publication.sid)
        except Exception as e:
            reply(cmd_id, False, "unpublish_track %s: %s" % (source, getattr(e, "message", None) or e))
            return
        if self.local.get(source) is media:
            del self.local[source]
        await media.close()
        reply(cmd_id, True)

    async def op_mute_track(self, cmd_id, cmd):
        source = self._local_media_ready("mute_track", cmd_id, cmd)
        if source is None:
            return
        muted = cmd.get("muted")
        if not isinstance(muted, bool):
            reply(cmd_id, False, "mute_track %s: muted must be a bool" % source)
            return
        media = self.local.get(source)
        if media is None:
            reply(cmd_id, False, "mute_track %s: not published by this driver" % source)
            return
        media.muted = muted
        try:
            if muted:
                media.track.mute()
                if media.kind == "audio":
                    media.rtc_source.clear_queue()  # what was queued would play out after the mute
            else:
                media.track.unmute()
        except Exception as e:
            reply(cmd_id, False, "mute_track %s: %s" % (source, e))
            return
        reply(cmd_id, True)

    # ---- commands -------------------------------------------------------
    def dispatch(self, line):
        try:
            cmd = json.loads(line)
        except ValueError as e:
            log.error("ignoring a line that is not JSON (%s)", e)
            return
        if not isinstance(cmd, dict):
            log.error("ignoring a command that is not an object")
            return
        cmd_id = cmd.get("id")
        op = cmd.get("op")
        log.info("command %s %s", cmd_id, op)
        handler = getattr(self, "op_" + str(op), None) if isinstance(op, str) else None
        if handler is None:
            reply(cmd_id, False, "unknown op %r" % (op,), unsupported=True)
            return
        task = self.loop.create_task(self._run(handler, cmd_id, cmd))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _run(self, handler, cmd_id, cmd):
        try:
            await handler(cmd_id, cmd)
        except asyncio.CancelledError:
            raise
        except Exception as e:
            log.exception("command %s failed", cmd_id)
            reply(cmd_id, False, "%s: %s: %s" % (cmd.get("op"), type(e).__name__, e))

    def _connected(self):
        return self.room is not None and self.room.isconnected()

    async def op_connect(self, cmd_id, cmd):
        url = cmd.get("url")
        token = cmd.get("token")
        remember_secret(token)
        options = cmd.get("options") or {}
        if options.get("reconnect_policy") is not None:
            reply(
                cmd_id,
                False,
                "connect: the upstream Rust SDK's reconnect policy is fixed (constants); "
                "it cannot take reconnect_policy",
                unsupported=True,
            )
            return
        unknown = sorted(k for k in options if k != "reconnect_policy")
        if unknown:
            log.warning("connect: ignoring unknown options %s", unknown)
        if not isinstance(url, str) or not isinstance(token, str) or not url or not token:
            reply(cmd_id, False, "connect: url and token are required strings")
            return
        async with self.lifecycle:
            if self.connecting or self._connected():
                reply(cmd_id, False, "connect: the room is already connected or connecting")
                return
            room = _Room(loop=self.loop)
            self._attach(room)
            self.connecting = True
            started = time.monotonic()
            task = self.loop.create_task(room.connect(url, token, rtc.RoomOptions(auto_subscribe=True)))
            try:
                done, _ = await asyncio.wait({task}, timeout=self.connect_timeout)
            except asyncio.CancelledError:
                room.abandoned = True
                task.add_done_callback(lambda t: self._abandoned_connect(t, room))
                self.connecting = False
                raise
            self.connecting = False
            if not done:
                room.abandoned = True
                task.add_done_callback(lambda t: self._abandoned_connect(t, room))
                reply(cmd_id, False, "connect: the SDK did not connect within %.0f s" % self.connect_timeout)
                return
            exc = task.exception()
            if exc is not None:
                msg = getattr(exc, "message", None) or str(exc) or type(exc).__name__
                reply(cmd_id, False, "connect: %s" % msg)
                return
            self.room = room
            log.info("connected in %.3f s", time.monotonic() - started)
            emit_event("connected")
            reply(cmd_id, True)

    def _abandoned_connect(self, task, room):
        """A connect that outlived its reply: if it ever succeeds, leave again."""
        if task.cancelled() or task.exception() is not None:
            return
        log.warning("an abandoned connect succeeded late; disconnecting it")
        self.loop.create_task(room.disconnect())

    async def op_simulate(self, cmd_id, cmd):
        scenario = cmd.get("scenario")
        if scenario not in FAULTLINE_SCENARIOS:
            reply(cmd_id, False, "simulate %s: unknown scenario" % (scenario,), unsupported=True)
            return
        kind = simulate_kind(scenario)
        if kind is None:
            reply(cmd_id, False, "simulate %s: this SDK has no such scenario" % scenario, unsupported=True)
            return
        if scenario == "speaker":
            secs = cmd.get("secs")
            if secs is not None and secs != SDK_SPEAKER_SECS:
                reply(
                    cmd_id,
                    False,
                    "simulate speaker: this SDK always simulates %d s, not %s s" % (SDK_SPEAKER_SECS, secs),
                    unsupported=True,
                )
                return
        if not self._connected():
            reply(cmd_id, False, "simulate %s: the room is not connected" % scenario)
            return
        try:
            await self.room.simulate_scenario(kind)
        except Exception as e:
            reply(cmd_id, False, "simulate %s: %s" % (scenario, e))
            return
        reply(cmd_id, True)

    async def op_publish(self, cmd_id, cmd):
        try:
            payload = base64.b64decode(cmd.get("payload") or "", validate=True)
        except Exception as e:
            reply(cmd_id, False, "publish: payload is not base64 (%s)" % e)
            return
        topic = cmd.get("topic")
        reliable = bool(cmd.get("reliable", True))
        destinations = list(cmd.get("destinations") or [])
        if self.room is None or self.room._local_participant is None:
            reply(cmd_id, False, "publish: the room is not connected")
            return
        try:
            await self.room.local_participant.publish_data(
                payload,
                reliable=reliable,
                destination_identities=destinations,
                topic=topic or "",
            )
        except Exception as e:
            reply(cmd_id, False, "publish: %s" % (getattr(e, "message", None) or e))
            return
        reply(cmd_id, True)

    async def op_state(self, cmd_id, cmd):
        reply(cmd_id, True, state=await self.read_state())

    async def read_state(self):
        room = self.room
        if room is None:
            return {
                "connection_state": "disconnected",
                "room_sid": None,
                "local_sid": None,
                "local_identity": None,
                "remotes": [],
                "local_tracks": [],
                "subscriptions": [],
            }
        room_sid = None
        try:
            room_sid = await asyncio.wait_for(room.sid, 0.5) or None
        except Exception:
            pass
        lp = room._local_participant
        return {
            "connection_state": _CONNECTION_STATES.get(room.connection_state, "disconnected"),
            "room_sid": room_sid,
            "local_sid": (lp.sid or None) if lp is not None else None,
            "local_identity": (lp.identity or None) if lp is not None else None,
            "remotes": [{"identity": p.identity, "sid": p.sid} for p in room.remote_participants.values()],
            "local_tracks": self._local_tracks(lp),
            "subscriptions": [
                {"from": p.identity, "source": source_name(pub.source), "sid": pub.sid}
                for p in list(room.remote_participants.values())
                for pub in list(p.track_publications.values())
                if pub.subscribed
            ],
        }

    @staticmethod
    def _local_tracks(lp):
        if lp is None:
            return []
        out = []
        for pub in list(lp.track_publications.values()):
            track = pub.track
            muted = track.muted if track is not None else pub.muted
            out.append({"source": source_name(pub.source), "sid": pub.sid, "muted": bool(muted)})
        return out

    async def op_close(self, cmd_id, cmd):
        async with self.lifecycle:
            if self._connected():
                try:
                    await asyncio.wait_for(self.room.disconnect(), DISCONNECT_TIMEOUT_S)
                except asyncio.TimeoutError:
                    reply(cmd_id, False, "close: the SDK did not disconnect within %.0f s" % DISCONNECT_TIMEOUT_S)
                    return
            await self._stop_media()
            reply(cmd_id, True)

    async def shutdown(self):
        """stdin reached EOF: leave the room if still in it, quickly."""
        for t in list(self.tasks):
            t.cancel()
        if self._connected():
            log.info("stdin closed: disconnecting")
            try:
                await asyncio.wait_for(self.room.disconnect(), 3.0)
            except Exception as e:
                log.warning("disconnect on EOF: %s", e)


def _stdin_reader(loop, queue):
    try:
        for raw in sys.stdin.buffer:
            line = raw.decode("utf-8", "replace").strip()
            if line:
                loop.call_soon_threadsafe(queue.put_nowait, line)
    except Exception as e:
        log.error("stdin read failed: %s", e)
    finally:
        try:
            loop.call_soon_threadsafe(queue.put_nowait, None)
        except RuntimeError:
            pass


def _hard_exit_after(secs):
    def run():
        time.sleep(secs)
        log.warning("exit deadline reached; exiting now")
        logging.shutdown()
        os._exit(0)

    threading.Thread(target=run, name="exit-deadline", daemon=True).start()


async def amain():
    loop = asyncio.get_running_loop()
    ffi = ffi_version()
    hello = {"type": "hello", "protocol": PROTOCOL_VERSION, "sdk": SDK_NAME, "sdk_version": sdk_version()}
    ffi_text = ("livekit_ffi v%s" % ffi) if ffi else "livekit_ffi version unknown"
    hello["detail"] = "%s (%s)" % (ffi_text, library_identity())
    emit(hello)
    log.info("hello: %s", hello)

    driver = Driver(loop)
    queue = asyncio.Queue()
    threading.Thread(target=_stdin_reader, args=(loop, queue), name="stdin", daemon=True).start()
    while True:
        line = await queue.get()
        if line is None:
            break
        driver.dispatch(line)
    _hard_exit_after(EOF_EXIT_DEADLINE_S)
    await driver.shutdown()


def main():
    try:
        asyncio.run(amain())
    except KeyboardInterrupt:
        pass
    log.info("exiting")
    logging.shutdown()
    # Skip interpreter teardown (and the wheel's atexit FFI dispose, which can
    # block): the room is already closed and every line is flushed.
    os._exit(0)


if __name__ == "__main__":
    main()
