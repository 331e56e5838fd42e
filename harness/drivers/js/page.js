// faultline js driver, page side: owns one livekit-client Room inside headless Chromium.
//
// driver.mjs calls the functions of `window.faultline` with page.evaluate and receives the
// SDK's events through the `__faultlineEvent` binding it exposes. Every event and every
// command result carries a number from one counter (`seq`), so the driver can write them
// in exactly the order they happened here, whatever order they reach Node in.
//
// This page translates only: it never retries, never invents an event, never hides one.
'use strict';

(() => {
  const L = window.LivekitClient;
  let seq = 0;
  let room = null;

  /** Sends one protocol event (without `type`) to the driver. */
  function emit(fields) {
    const line = { seq: ++seq, event: fields };
    try {
      window.__faultlineEvent(line);
    } catch (e) {
      console.error('faultline: could not hand an event to the driver', e);
    }
  }

  /** Wraps a command result with the next sequence number. */
  function done(reply) {
    return { seq: ++seq, reply };
  }

  function errorText(e) {
    if (e === undefined || e === null) return 'unknown error';
    const name = e.name && e.name !== 'Error' ? `${e.name}: ` : '';
    return `${name}${e.message !== undefined ? e.message : String(e)}`;
  }

  function reasonName(reason) {
    if (reason === undefined || reason === null) return 'UNKNOWN_REASON';
    const name = L.DisconnectReason[reason];
    if (typeof name === 'string') return name;
    console.warn(`faultline: unknown DisconnectReason value ${reason}; reporting UNKNOWN_REASON`);
    return 'UNKNOWN_REASON';
  }

  function toBase64(bytes) {
    let bin = '';
    const chunk = 0x8000;
    for (let i = 0; i < bytes.length; i += chunk) {
      bin += String.fromCharCode.apply(null, bytes.subarray(i, i + chunk));
    }
    return btoa(bin);
  }

  function fromBase64(text) {
    const bin = atob(text);
    const bytes = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
    return bytes;
  }

  /**
   * faultline's reconnect policy on livekit-client's ReconnectPolicy interface: `attempts`
   * attempts per episode, the first immediate, attempt k >= 2 waiting a uniform random time
   * in [0, min(max_delay_ms, base_delay_ms * 2^(k-2))] ("full jitter"). livekit-client asks
   * with retryCount = failed attempts so far, so attempt k = retryCount + 1; null stops.
   */
  function reconnectPolicy(p) {
    const attempts = p.attempts;
    const base = p.base_delay_ms;
    const cap = p.max_delay_ms;
    for (const [k, v] of Object.entries({ attempts, base_delay_ms: base, max_delay_ms: cap })) {
      if (typeof v !== 'number' || !Number.isFinite(v) || v < 0) {
        throw new Error(`reconnect_policy.${k} must be a non-negative number, not ${JSON.stringify(v)}`);
      }
    }
    return {
      nextRetryDelayInMs(context) {
        const attempt = context.retryCount + 1;
        if (attempt > attempts) return null;
        if (attempt <= 1) return 0;
        const limit = Math.min(cap, base * Math.pow(2, attempt - 2));
        return Math.random() * limit;
      },
    };
  }

  function plainState(state) {
    switch (state) {
      case L.ConnectionState.Connected:
        return 'connected';
      case L.ConnectionState.Reconnecting:
      case L.ConnectionState.SignalReconnecting:
        // SignalReconnecting: signalling is being resumed (media may still flow). faultline's
        // vocabulary counts its `signal_reconnecting` event as the start of a reconnect
        // episode, so the state it leaves the room in is `reconnecting`.
        return 'reconnecting';
      default:
        // Disconnected, or Connecting (not joined yet).
        return 'disconnected';
    }
  }

  function connectionState(r) {
    return r ? plainState(r.state) : 'disconnected';
  }

  function watch(r) {
    const E = L.RoomEvent;
    r.on(E.SignalReconnecting, () => emit({ event: 'signal_reconnecting' }))
      .on(E.Reconnecting, () => emit({ event: 'reconnecting' }))
      .on(E.Reconnected, () => emit({ event: 'reconnected' }))
      .on(E.Disconnected, (reason) => emit({ event: 'disconnected', reason: reasonName(reason) }))
      .on(E.ParticipantConnected, (p) =>
        emit({ event: 'participant_connected', identity: p.identity, sid: p.sid }))
      .on(E.ParticipantDisconnected, (p) =>
        emit({ event: 'participant_disconnected', identity: p.identity, sid: p.sid }))
      .on(E.DataReceived, (payload, participant, kind, topic, _encryption, identity) =>
        emit({
          event: 'data_received',
          payload: toBase64(payload),
          topic: topic === undefined || topic === '' ? null : topic,
          reliable: kind === L.DataPacket_Kind.RELIABLE,
          from: participant ? participant.identity : identity ? identity : null,
        }))
      .on(E.ActiveSpeakersChanged, (speakers) =>
        emit({ event: 'active_speakers_changed', speakers: speakers.map((p) => p.identity) }))
      .on(E.ConnectionStateChanged, (s) => console.info(`faultline: connection state ${s}`));
  }

  function withTimeout(promise, ms, what) {
    let timer;
    const timeout = new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${what} timed out after ${ms / 1000} s`)), ms);
    });
    return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
  }

  // faultline's scenario names -> livekit-client's simulateScenario names.
  const SCENARIOS = {
    'signal-reconnect': 'signal-reconnect',
    'full-reconnect': 'full-reconnect',
    'disconnect-signal-on-resume': 'disconnect-signal-on-resume',
    'disconnect-signal-on-resume-no-messages': 'disconnect-signal-on-resume-no-messages',
    'node-failure': 'node-failure',
    migration: 'migration',
    'server-leave': 'server-leave',
    'force-tcp': 'force-tcp',
    'force-tls': 'force-tls',
    speaker: 'speaker',
  };

  window.faultline = {
    /** Lets Chromium gather loopback ICE candidates (see NOTES.md) and says what runs. */
    async init() {
      let media = 'not requested';
      try {
        const stream = await navigator.mediaDevices.getUserMedia({ audio: true });
        stream.getTracks().forEach((t) => t.stop());
        media = 'granted';
      } catch (e) {
        media = `refused (${errorText(e)})`;
        console.warn(`faultline: getUserMedia ${media}; ICE may gather no loopback candidates`);
      }
      L.setLogLevel(window.__faultlineLogLevel || 'info');
      return { version: L.version, protocol: L.protocolVersion, userAgent: navigator.userAgent, media };
    },

    async connect(url, token, options, timeoutMs) {
      if (room && room.state !== L.ConnectionState.Disconnected) {
        return done({ ok: false, error: `connect: the room is already ${room.state}` });
      }
      const roomOptions = { adaptiveStream: false, dynacast: false };
      try {
        if (options && options.reconnect_policy) {
          roomOptions.reconnectPolicy = reconnectPolicy(options.reconnect_policy);
        }
      } catch (e) {
        return done({ ok: false, error: `connect: ${errorText(e)}` });
      }
      const r = new L.Room(roomOptions);
      room = r;
      watch(r);
      try {
        await withTimeout(r.connect(url, token, { autoSubscribe: true }), timeoutMs, 'connect');
      } catch (e) {
        const error = `connect: ${errorText(e)}`;
        // Stop whatever the SDK is still trying; any event it reports is still passed on.
        try {
          await withTimeout(r.disconnect(), 5000, 'disconnect after a failed connect');
        } catch (e2) {
          console.warn(`faultline: ${errorText(e2)}`);
        }
        return done({ ok: false, error });
      }
      emit({ event: 'connected' });
      return done({ ok: true });
    },

    async simulate(scenario, secs) {
      const name = SCENARIOS[scenario];
      if (name === undefined) {
        return done({
          ok: false,
          unsupported: true,
          error: `simulate ${scenario}: livekit-client has no such scenario`,
        });
      }
      if (!room || room.state === L.ConnectionState.Disconnected) {
        return done({ ok: false, error: `simulate ${scenario}: the room is not connected` });
      }
      try {
        if (name === 'speaker' && typeof secs === 'number' && secs !== 3) {
          // livekit-client's own 'speaker' always asks for 3 s; send the same request with
          // faultline's duration through the SDK's signal client.
          await room.engine.client.sendSimulateScenario({
            scenario: { case: 'speakerUpdate', value: secs },
          });
        } else {
          await room.simulateScenario(name);
        }
      } catch (e) {
        return done({ ok: false, error: `simulate ${scenario}: ${errorText(e)}` });
      }
      return done({ ok: true });
    },

    async publish(payload, topic, reliable, destinations) {
      if (!room || room.state === L.ConnectionState.Disconnected) {
        return done({ ok: false, error: 'publish: the room is not connected' });
      }
      try {
        const opts = { reliable: !!reliable };
        if (topic !== null && topic !== undefined) opts.topic = topic;
        if (destinations && destinations.length > 0) opts.destinationIdentities = destinations;
        await room.localParticipant.publishData(fromBase64(payload || ''), opts);
      } catch (e) {
        return done({ ok: false, error: `publish: ${errorText(e)}` });
      }
      return done({ ok: true });
    },

    async state() {
      // Everything but the room sid is read synchronously, at one moment.
      const r = room;
      const connection_state = connectionState(r);
      const local = r ? r.localParticipant : null;
      const local_sid = (local && local.sid) || '';
      const local_identity = (local && local.identity) || '';
      const remotes = r
        ? Array.from(r.remoteParticipants.values()).map((p) => ({ identity: p.identity, sid: p.sid }))
        : [];
      let room_sid = '';
      if (r) {
        try {
          // Resolves at once when the SDK knows the sid; it waits only before the server sent it.
          room_sid = await withTimeout(r.getSid(), 2000, 'room sid');
        } catch (e) {
          console.warn(`faultline: state: ${errorText(e)}`);
        }
      }
      return done({
        ok: true,
        state: { connection_state, room_sid: room_sid || '', local_sid, local_identity, remotes },
      });
    },

    async close() {
      if (room) {
        try {
          await withTimeout(room.disconnect(), 10000, 'disconnect');
        } catch (e) {
          return done({ ok: false, error: `close: ${errorText(e)}` });
        }
      }
      return done({ ok: true });
    },
  };
})();
