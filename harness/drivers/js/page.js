// faultline js driver, page side: owns one livekit-client Room inside headless Chromium.
//
// driver.mjs calls the functions of `window.faultline` with page.evaluate and receives the
// SDK's events through the `__faultlineEvent` binding it exposes. Every event and every
// command result carries a number from one counter (`seq`), so the driver can write them
// in exactly the order they happened here, whatever order they reach Node in.
//
// This page translates only: it never retries, never invents an event, never hides one.
//
// Media (protocol 2): publish_track captures Chromium's fake camera or microphone
// (--use-fake-device-for-media-stream) and publishes it; every subscribed remote track is
// read through its receiver's raw stats (track.getRTCStatsReport()) every 100 ms and
// reported in one `media` event.
'use strict';

(() => {
  const L = window.LivekitClient;
  let seq = 0;
  let room = null;
  // The local tracks this page created, by source (what an app holds on to).
  const localTracks = {};

  const MEDIA_INTERVAL_MS = 100;
  // What publish_track captures and how it publishes it: small, cheap on two cores, no
  // simulcast (one layer, so frames counted at the receiver are the publisher's frames).
  const CAMERA_CAPTURE = { resolution: { width: 320, height: 180, frameRate: 30 } };
  const CAMERA_PUBLISH = {
    simulcast: false,
    videoCodec: 'vp8',
    videoEncoding: { maxBitrate: 300_000, maxFramerate: 30 },
  };
  const MICROPHONE_CAPTURE = {
    echoCancellation: false,
    noiseSuppression: false,
    autoGainControl: false,
    channelCount: 1,
    sampleRate: 48000,
  };
  // No DTX: the fake microphone is mostly silence between beeps, and with DTX a silent
  // publisher sends (almost) nothing, which at the receiver looks like media stopping.
  const MICROPHONE_PUBLISH = { dtx: false };

  /**
   * The remote tracks this page is subscribed to, by `${from}\n${sid}`: { from, source,
   * sid, kind, track, ready, baseline (inbound-rtp id -> raw counters at subscription, for a
   * reused receiver), counted (inbound-rtp id -> { frames, decoded } since subscription),
   * offset (what an earlier subscription to the same sid reached), elements }.
   */
  const subscriptions = new Map();
  /** The last counters reported per `${from}\n${sid}`, kept after unsubscription. */
  const reached = new Map();
  /** Receivers that have carried a subscription already (livekit reuses transceivers). */
  const usedReceivers = new WeakSet();
  let mediaTimer = null;
  let mediaBusy = false;

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
      .on(E.ConnectionStateChanged, (s) => console.info(`faultline: connection state ${s}`))
      .on(E.LocalTrackPublished, (pub) =>
        emit({ event: 'local_track_published', source: pub.source, sid: pub.trackSid }))
      .on(E.LocalTrackUnpublished, (pub) =>
        emit({ event: 'local_track_unpublished', source: pub.source, sid: pub.trackSid }))
      .on(E.TrackPublished, (pub, p) =>
        emit({ event: 'track_published', from: p.identity, source: pub.source, sid: pub.trackSid }))
      .on(E.TrackUnpublished, (pub, p) =>
        emit({ event: 'track_unpublished', from: p.identity, source: pub.source, sid: pub.trackSid }))
      .on(E.TrackSubscribed, (track, pub, p) => {
        // Baseline first, before anything else can run: the stats read starts now.
        subscribed(track, pub, p);
        emit({ event: 'track_subscribed', from: p.identity, source: pub.source, sid: pub.trackSid });
      })
      .on(E.TrackUnsubscribed, (track, pub, p) => {
        unsubscribed(track, pub, p);
        emit({ event: 'track_unsubscribed', from: p.identity, source: pub.source, sid: pub.trackSid });
      })
      .on(E.TrackMuted, (pub, p) => {
        // livekit-client reports its own tracks' mutes here too; the protocol's event is
        // about remote tracks (a local mute is answered by mute_track).
        if (p && !p.isLocal) emit({ event: 'track_muted', from: p.identity, source: pub.source });
        else console.info(`faultline: local ${pub.source} track muted`);
      })
      .on(E.TrackUnmuted, (pub, p) => {
        if (p && !p.isLocal) emit({ event: 'track_unmuted', from: p.identity, source: pub.source });
        else console.info(`faultline: local ${pub.source} track unmuted`);
      });
  }

  // ------------------------------------------------------------------ remote media counters

  function subKey(from, sid) {
    return `${from}\n${sid}`;
  }

  /** Reads one receiver's inbound-rtp entries as raw counters, by stats id. */
  async function readCounters(track, kind) {
    const report = await track.getRTCStatsReport();
    const out = new Map();
    if (!report) return out;
    report.forEach((stat) => {
      if (stat.type !== 'inbound-rtp') return;
      if (kind === 'video') {
        out.set(stat.id, { frames: stat.framesReceived || 0, decoded: stat.framesDecoded || 0 });
      } else {
        // Audio: 10 ms units of samples that really arrived. totalSamplesReceived includes
        // concealment (samples NetEq invented for missing packets); take it out.
        const codec = stat.codecId ? report.get(stat.codecId) : undefined;
        const clockRate = (codec && codec.clockRate) || 48000;
        const real = Math.max(0, (stat.totalSamplesReceived || 0) - (stat.concealedSamples || 0));
        out.set(stat.id, { samples: real, perUnit: clockRate / 100 });
      }
    });
    return out;
  }

  function subscribed(track, pub, p) {
    const key = subKey(p.identity, pub.trackSid);
    const previous = reached.get(key);
    const sub = {
      from: p.identity,
      source: pub.source,
      sid: pub.trackSid,
      kind: track.kind,
      track,
      ready: false,
      baseline: new Map(),
      counted: new Map(),
      // The same sid subscribed again (a full reconnect of this client): counters never
      // go back for a sid, so they go on from where the last subscription left them.
      offset: previous ? { ...previous } : { frames: 0, decoded: 0 },
      elements: [],
    };
    subscriptions.set(key, sub);
    const receiver = track.receiver;
    if (receiver && usedReceivers.has(receiver)) {
      // A reused receiver: its stats already count an earlier track. Subtract them.
      console.info(`faultline: ${pub.trackSid} of ${p.identity} reuses a receiver; counting from its stats now`);
      readCounters(track, sub.kind)
        .then((base) => {
          sub.baseline = base;
        })
        .catch((e) => console.warn(`faultline: baseline stats for ${pub.trackSid}: ${errorText(e)}`))
        .finally(() => {
          sub.ready = true;
        });
    } else {
      sub.ready = true;
    }
    if (receiver) usedReceivers.add(receiver);
    if (track.kind === 'audio') {
      // Chromium pulls remote audio out of its jitter buffer (and so counts samples) only
      // for a track that plays somewhere: play it, silently, through an <audio> element.
      try {
        const el = track.attach();
        el.muted = true;
        el.volume = 0;
        document.body.appendChild(el);
        sub.elements.push(el);
      } catch (e) {
        console.warn(`faultline: could not attach ${pub.trackSid}: ${errorText(e)}`);
      }
    }
    startMedia();
  }

  function unsubscribed(track, pub, p) {
    const key = subKey(p.identity, pub.trackSid);
    const sub = subscriptions.get(key);
    if (!sub) return;
    subscriptions.delete(key);
    for (const el of sub.elements) {
      try {
        track.detach(el);
      } catch (e) {
        console.warn(`faultline: detach ${pub.trackSid}: ${errorText(e)}`);
      }
      el.remove();
    }
    if (subscriptions.size === 0) stopMedia();
  }

  /** Counters of one subscription since it began (never less than last reported). */
  function totals(sub) {
    let frames = sub.offset.frames;
    let decoded = sub.offset.decoded;
    for (const c of sub.counted.values()) {
      frames += c.frames;
      decoded += c.decoded;
    }
    return { frames, decoded };
  }

  async function sampleOne(sub) {
    if (!sub.ready) return;
    const now = await readCounters(sub.track, sub.kind);
    for (const [id, c] of now) {
      const base = sub.baseline.get(id);
      let frames;
      let decoded = 0;
      if (sub.kind === 'video') {
        frames = c.frames - (base ? base.frames : 0);
        decoded = c.decoded - (base ? base.decoded : 0);
      } else {
        frames = Math.floor((c.samples - (base ? base.samples : 0)) / c.perUnit);
      }
      // An inbound-rtp entry that vanishes keeps what it counted; one never counts back.
      const before = sub.counted.get(id) || { frames: 0, decoded: 0 };
      sub.counted.set(id, {
        frames: Math.max(before.frames, frames),
        decoded: Math.max(before.decoded, decoded),
      });
    }
  }

  async function mediaTick() {
    if (mediaBusy || subscriptions.size === 0) return;
    mediaBusy = true;
    try {
      const subs = Array.from(subscriptions.values());
      await Promise.all(subs.map((sub) => sampleOne(sub).catch((e) => {
        console.warn(`faultline: stats of ${sub.sid}: ${errorText(e)}`);
      })));
      const tracks = [];
      for (const sub of subs) {
        const t = totals(sub);
        reached.set(subKey(sub.from, sub.sid), t);
        // A subscription that ended while its stats were read is not reported.
        if (subscriptions.get(subKey(sub.from, sub.sid)) !== sub) continue;
        const line = { from: sub.from, source: sub.source, sid: sub.sid, frames: t.frames };
        if (sub.kind === 'video') line.decoded = t.decoded;
        tracks.push(line);
      }
      if (tracks.length > 0) emit({ event: 'media', tracks });
    } finally {
      mediaBusy = false;
    }
  }

  function startMedia() {
    if (mediaTimer === null) mediaTimer = setInterval(mediaTick, MEDIA_INTERVAL_MS);
  }

  function stopMedia() {
    if (mediaTimer !== null) {
      clearInterval(mediaTimer);
      mediaTimer = null;
    }
  }

  // ------------------------------------------------------------------ local tracks

  const SOURCES = {
    camera: () => L.Track.Source.Camera,
    microphone: () => L.Track.Source.Microphone,
  };

  function localPublication(source) {
    return room ? room.localParticipant.getTrackPublication(SOURCES[source]()) : undefined;
  }

  /** The reply for a command that needs a connected room and a known source, or null. */
  function refuse(op, source) {
    if (!Object.prototype.hasOwnProperty.call(SOURCES, source)) {
      return done({
        ok: false,
        error: `${op}: source must be "camera" or "microphone", not ${JSON.stringify(source)}`,
      });
    }
    if (!room || room.state === L.ConnectionState.Disconnected) {
      return done({ ok: false, error: `${op} ${source}: the room is not connected` });
    }
    return null;
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

    async publishTrack(source) {
      const refused = refuse('publish_track', source);
      if (refused) return refused;
      if (localPublication(source)) {
        return done({ ok: false, error: `publish_track ${source}: a ${source} track is already published` });
      }
      let track = null;
      try {
        if (source === 'camera') {
          track = await L.createLocalVideoTrack(CAMERA_CAPTURE);
          const s = track.mediaStreamTrack.getSettings();
          console.info(`faultline: camera captures ${s.width}x${s.height} at ${s.frameRate} fps`);
        } else {
          track = await L.createLocalAudioTrack(MICROPHONE_CAPTURE);
        }
        const options = source === 'camera' ? CAMERA_PUBLISH : MICROPHONE_PUBLISH;
        const pub = await room.localParticipant.publishTrack(track, {
          ...options,
          source: SOURCES[source](),
        });
        localTracks[source] = track;
        return done({ ok: true, sid: pub.trackSid });
      } catch (e) {
        if (track && !localPublication(source)) track.stop();
        return done({ ok: false, error: `publish_track ${source}: ${errorText(e)}` });
      }
    },

    async unpublishTrack(source) {
      const refused = refuse('unpublish_track', source);
      if (refused) return refused;
      const pub = localPublication(source);
      if (!pub || !pub.track) {
        return done({ ok: false, error: `unpublish_track ${source}: no ${source} track is published` });
      }
      try {
        await room.localParticipant.unpublishTrack(pub.track, true);
        delete localTracks[source];
      } catch (e) {
        return done({ ok: false, error: `unpublish_track ${source}: ${errorText(e)}` });
      }
      return done({ ok: true });
    },

    async muteTrack(source, muted) {
      const op = muted ? 'mute_track' : 'mute_track (unmute)';
      const refused = refuse(op, source);
      if (refused) return refused;
      // The app's own track object: while livekit-client republishes after a full reconnect
      // there is no publication for a moment, but the user can still mute what they hold.
      const pub = localPublication(source);
      const target = pub && pub.track ? pub : localTracks[source];
      if (!target) {
        return done({ ok: false, error: `${op} ${source}: no ${source} track was published` });
      }
      try {
        if (muted) await target.mute();
        else await target.unmute();
      } catch (e) {
        return done({ ok: false, error: `${op} ${source}: ${errorText(e)}` });
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
      const local_tracks = local
        ? Array.from(local.trackPublications.values()).map((pub) => ({
          source: pub.source,
          sid: pub.trackSid,
          muted: pub.isMuted,
        }))
        : [];
      const subscribedTracks = [];
      if (r) {
        for (const p of r.remoteParticipants.values()) {
          for (const pub of p.trackPublications.values()) {
            if (pub.isSubscribed && pub.track) {
              subscribedTracks.push({ from: p.identity, source: pub.source, sid: pub.trackSid });
            }
          }
        }
      }
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
        state: {
          connection_state,
          room_sid: room_sid || '',
          local_sid,
          local_identity,
          remotes,
          local_tracks,
          subscriptions: subscribedTracks,
        },
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
