"""faultline driver for the upstream LiveKit Rust SDK (driver protocol version 1).

faultline does not link the upstream Rust SDK; it reaches it through the PyPI
``livekit`` wheel, which ships the SDK compiled as ``liblivekit_ffi.so`` together
with a thin Python API (``livekit.rtc``). This program owns one ``rtc.Room``,
reads faultline's commands from stdin and writes replies and SDK events to
stdout, one JSON object per line, as described in docs/driver-protocol.md.

It only translates: it never retries, never decides what a reconnect is and
reports every SDK event it is given. Everything else (Python logging and the
SDK's own logs, forwarded by the FFI) goes to stderr. The access token arrives
on stdin and is scrubbed from every log line and error message.

Environment (all optional):
  FAULTLINE_DRIVER_LOG         Python log level for stderr (default INFO)
  FAULTLINE_CONNECT_TIMEOUT_S  bound on one ``connect`` command (default 20)
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

PROTOCOL_VERSION = 1
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
from livekit import rtc  # noqa: E402
from livekit.rtc._proto import participant_pb2, room_pb2  # noqa: E402


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
        }

    async def op_close(self, cmd_id, cmd):
        async with self.lifecycle:
            if self._connected():
                try:
                    await asyncio.wait_for(self.room.disconnect(), DISCONNECT_TIMEOUT_S)
                except asyncio.TimeoutError:
                    reply(cmd_id, False, "close: the SDK did not disconnect within %.0f s" % DISCONNECT_TIMEOUT_S)
                    return
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
    hello["detail"] = ("livekit_ffi v%s" % ffi) if ffi else "livekit_ffi version unknown"
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
