// Media for the driver: the synthetic local sources, and the counters of what each
// subscribed remote track delivered.
package main

import (
	"log"
	"sync"
	"sync/atomic"
	"time"

	"github.com/livekit/protocol/livekit"
	lksdk "github.com/livekit/server-sdk-go/v2"
	"github.com/pion/rtcp"
	"github.com/pion/webrtc/v4"
	"github.com/pion/webrtc/v4/pkg/media"
)

type webrtcTrack = webrtc.TrackRemote

const (
	audioFrame     = 20 * time.Millisecond
	videoFPS       = 30
	videoWidth     = 320
	videoHeight    = 180
	mediaInterval  = 100 * time.Millisecond
	feedMaxLag     = 200 * time.Millisecond
	pliMinInterval = 500 * time.Millisecond
)

// opusSilence is a valid 20 ms Opus frame (CELT full band, mono, one frame) that decodes
// to silence: the same frame faultline-sdk sends.
var opusSilence = []byte{0xf8, 0xff, 0xfe}

// videoFrames is the synthetic camera's picture, as faultline encodes it.
type videoFrames struct{ key, delta []byte }

// source is one synthetic local track and the goroutine feeding it.
type source struct {
	name      string
	track     *lksdk.LocalTrack
	muted     atomic.Bool
	keyWanted atomic.Bool
	stop      chan struct{}
	stopOnce  sync.Once
}

func (s *source) close() {
	s.stopOnce.Do(func() {
		close(s.stop)
		_ = s.track.Close()
	})
}

// feed writes a frame every interval on an absolute schedule (nothing while muted); a
// feeder that falls far behind restarts its schedule instead of sending a burst.
func (s *source) feed(frames videoFrames) {
	interval := audioFrame
	if s.name == "camera" {
		interval = time.Second / videoFPS
	}
	due := time.Now()
	errors := 0
	for {
		if !s.muted.Load() {
			data := opusSilence
			if s.name == "camera" {
				data = frames.delta
				if s.keyWanted.Swap(false) {
					data = frames.key
				}
			}
			if err := s.track.WriteSample(media.Sample{Data: data, Duration: interval}, nil); err != nil {
				errors++
				if errors <= 3 || errors%100 == 0 {
					log.Printf("feeding %s failed (%d so far): %v", s.name, errors, err)
				}
			}
		}
		due = due.Add(interval)
		now := time.Now()
		if now.Sub(due) > feedMaxLag {
			due = now
		}
		select {
		case <-s.stop:
			return
		case <-time.After(due.Sub(now)):
		}
	}
}

var sources = map[string]livekit.TrackSource{
	"microphone": livekit.TrackSource_MICROPHONE,
	"camera":     livekit.TrackSource_CAMERA,
}

// localReady checks a media command's source and the room; it replies when they are not fit.
func (d *driver) localReady(op string, cmd command) (*lksdk.Room, bool) {
	if _, ok := sources[cmd.Source]; !ok {
		replyErr(cmd.ID, true, "%s: unknown source %q (microphone or camera)", op, cmd.Source)
		return nil, false
	}
	room := d.currentRoom()
	if !connected(room) {
		replyErr(cmd.ID, false, "%s %s: the room is not connected", op, cmd.Source)
		return nil, false
	}
	return room, true
}

// publication is the SDK's current publication of a source (a full reconnect replaces it).
func publication(room *lksdk.Room, name string) *lksdk.LocalTrackPublication {
	for _, pub := range room.LocalParticipant.TrackPublications() {
		if local, ok := pub.(*lksdk.LocalTrackPublication); ok && pub.Source() == sources[name] {
			return local
		}
	}
	return nil
}

func (d *driver) opPublishTrack(cmd command) {
	room, ok := d.localReady("publish_track", cmd)
	if !ok {
		return
	}
	d.mu.Lock()
	if _, busy := d.local[cmd.Source]; busy {
		d.mu.Unlock()
		replyErr(cmd.ID, false, "publish_track %s: already published by this driver", cmd.Source)
		return
	}
	s := &source{name: cmd.Source, stop: make(chan struct{})}
	d.local[cmd.Source] = s
	d.mu.Unlock()

	codec := webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeOpus, ClockRate: 48000, Channels: 2}
	opts := &lksdk.TrackPublicationOptions{Name: "faultline-" + cmd.Source, Source: sources[cmd.Source]}
	if cmd.Source == "camera" {
		codec = webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeVP8, ClockRate: 90000}
		opts.VideoWidth, opts.VideoHeight = videoWidth, videoHeight
	}
	s.keyWanted.Store(true)
	track, err := lksdk.NewLocalSampleTrack(codec, lksdk.WithRTCPHandler(func(p rtcp.Packet) {
		switch p.(type) {
		case *rtcp.PictureLossIndication, *rtcp.FullIntraRequest:
			s.keyWanted.Store(true)
		}
	}))
	if err == nil {
		s.track = track
		go s.feed(d.video)
		var pub *lksdk.LocalTrackPublication
		if pub, err = room.LocalParticipant.PublishTrack(track, opts); err == nil {
			replyOK(cmd.ID, map[string]any{"sid": pub.SID()})
			return
		}
		s.close()
	}
	d.mu.Lock()
	if d.local[cmd.Source] == s {
		delete(d.local, cmd.Source)
	}
	d.mu.Unlock()
	replyErr(cmd.ID, false, "publish_track %s: %v", cmd.Source, err)
}

func (d *driver) opUnpublishTrack(cmd command) {
	room, ok := d.localReady("unpublish_track", cmd)
	if !ok {
		return
	}
	d.mu.Lock()
	s := d.local[cmd.Source]
	d.mu.Unlock()
	pub := publication(room, cmd.Source)
	if s == nil || pub == nil {
		replyErr(cmd.ID, false, "unpublish_track %s: not published by this driver", cmd.Source)
		return
	}
	if err := room.LocalParticipant.UnpublishTrack(pub.SID()); err != nil {
		replyErr(cmd.ID, false, "unpublish_track %s: %v", cmd.Source, err)
		return
	}
	d.mu.Lock()
	if d.local[cmd.Source] == s {
		delete(d.local, cmd.Source)
	}
	d.mu.Unlock()
	s.close()
	replyOK(cmd.ID, nil)
}

func (d *driver) opMuteTrack(cmd command) {
	room, ok := d.localReady("mute_track", cmd)
	if !ok {
		return
	}
	if cmd.Muted == nil {
		replyErr(cmd.ID, false, "mute_track %s: muted must be a bool", cmd.Source)
		return
	}
	d.mu.Lock()
	s := d.local[cmd.Source]
	d.mu.Unlock()
	if s == nil {
		replyErr(cmd.ID, false, "mute_track %s: not published by this driver", cmd.Source)
		return
	}
	// An unmute starts again with a key frame, as encoders do.
	if !*cmd.Muted && s.muted.Load() {
		s.keyWanted.Store(true)
	}
	s.muted.Store(*cmd.Muted)
	pub := publication(room, cmd.Source)
	if pub == nil {
		replyErr(cmd.ID, false, "mute_track %s: the SDK has no publication of it now", cmd.Source)
		return
	}
	pub.SetMuted(*cmd.Muted)
	replyOK(cmd.ID, nil)
}

// ---------------------------------------------------------------------------------------
// Receiving
// ---------------------------------------------------------------------------------------

// counts is what a subscription delivered: audio in 10 ms units, or video frames
// received whole and decodable.
type counts struct{ frames, decoded uint64 }

type subscription struct {
	from, source, sid string
	video             bool
	base              counts // carried over from an earlier subscription of the same sid
	mu                sync.Mutex
	got               counts
	audioTenthsMs     uint64 // Opus received, in 0.1 ms (a frame can be 2.5 ms)
	chain             vp8Chain
}

func (s *subscription) report() map[string]any {
	s.mu.Lock()
	defer s.mu.Unlock()
	t := map[string]any{"from": s.from, "source": s.source, "sid": s.sid, "frames": s.base.frames + s.got.frames}
	if s.video {
		t["decoded"] = s.base.decoded + s.got.decoded
	}
	return t
}

func (d *driver) subscribe(track *webrtcTrack, pub *lksdk.RemoteTrackPublication, rp *lksdk.RemoteParticipant) {
	d.retire(pub.SID(), "subscribed again")
	d.mu.Lock()
	sub := &subscription{
		from: rp.Identity(), source: sourceName(pub.Source()), sid: pub.SID(),
		video: track.Kind() == webrtc.RTPCodecTypeVideo, base: d.retired[pub.SID()],
	}
	delete(d.retired, pub.SID())
	d.subs[sub.sid] = sub
	start := !d.reporting
	d.reporting = true
	d.mu.Unlock()
	go d.read(sub, track, rp)
	if start {
		go d.reportMedia()
	}
}

// read consumes the track as an application would, until it ends.
func (d *driver) read(sub *subscription, track *webrtcTrack, rp *lksdk.RemoteParticipant) {
	var lastPLI time.Time
	for {
		pkt, _, err := track.ReadRTP()
		if err != nil {
			log.Printf("subscription %s/%s (%s) stopped reading: %v", sub.from, sub.source, sub.sid, err)
			return
		}
		sub.mu.Lock()
		if sub.video {
			complete, decodable := sub.chain.push(pkt.SequenceNumber, pkt.Timestamp, pkt.Marker, pkt.Payload)
			if complete {
				sub.got.frames++
			}
			if decodable {
				sub.got.decoded++
			}
		} else {
			sub.audioTenthsMs += opusTenthsMs(pkt.Payload)
			sub.got.frames = sub.audioTenthsMs / 100
		}
		broken := sub.video && sub.chain.broken
		sub.mu.Unlock()
		if broken && time.Since(lastPLI) > pliMinInterval {
			lastPLI = time.Now()
			rp.WritePLI(webrtc.SSRC(track.SSRC()))
		}
	}
}

func (d *driver) retire(sid, why string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	sub, ok := d.subs[sid]
	if !ok {
		return
	}
	delete(d.subs, sid)
	sub.mu.Lock()
	d.retired[sid] = counts{sub.base.frames + sub.got.frames, sub.base.decoded + sub.got.decoded}
	sub.mu.Unlock()
	log.Printf("subscription %s/%s (%s) %s at %+v", sub.from, sub.source, sid, why, d.retired[sid])
}

// reportMedia sends a `media` event every 100 ms while any track is subscribed.
func (d *driver) reportMedia() {
	ticker := time.NewTicker(mediaInterval)
	defer ticker.Stop()
	sent := 0
	for range ticker.C {
		room := d.currentRoom()
		live := map[string]bool{}
		if room != nil {
			for _, rp := range room.GetRemoteParticipants() {
				for _, pub := range rp.TrackPublications() {
					if pub.IsSubscribed() {
						live[pub.SID()] = true
					}
				}
			}
		}
		d.mu.Lock()
		var subs []*subscription
		var gone []string
		for sid, sub := range d.subs {
			if live[sid] {
				subs = append(subs, sub)
			} else {
				gone = append(gone, sid)
			}
		}
		d.mu.Unlock()
		// A subscription the SDK dropped without a callback (its participant left, the
		// room closed) is no longer reported.
		for _, sid := range gone {
			d.retire(sid, "gone from the SDK")
		}
		if len(subs) == 0 {
			continue
		}
		tracks := make([]map[string]any, 0, len(subs))
		for _, s := range subs {
			tracks = append(tracks, s.report())
		}
		tracks = sortedTracks(tracks)
		if sent%20 == 0 {
			log.Printf("event media %v", tracks)
		}
		sent++
		event("media", map[string]any{"tracks": tracks})
	}
}

func (d *driver) stopMedia() {
	d.mu.Lock()
	var sids []string
	for sid := range d.subs {
		sids = append(sids, sid)
	}
	local := d.local
	d.local = map[string]*source{}
	d.mu.Unlock()
	for _, sid := range sids {
		d.retire(sid, "closed")
	}
	for _, s := range local {
		s.close()
	}
}

// opusTenthsMs is the audio an Opus packet carries, in 0.1 ms (RFC 6716 §3.1: the TOC
// byte's configuration gives the frame size, its code the number of frames).
func opusTenthsMs(p []byte) uint64 {
	if len(p) == 0 {
		return 0
	}
	config := p[0] >> 3
	var frame uint64
	switch {
	case config < 12: // SILK: 10, 20, 40, 60 ms
		frame = []uint64{100, 200, 400, 600}[config%4]
	case config < 16: // hybrid: 10, 20 ms
		frame = []uint64{100, 200}[config%2]
	default: // CELT: 2.5, 5, 10, 20 ms
		frame = []uint64{25, 50, 100, 200}[config%4]
	}
	n := uint64(1)
	switch p[0] & 3 {
	case 1, 2:
		n = 2
	case 3:
		if len(p) < 2 {
			return 0
		}
		n = uint64(p[1] & 0x3f)
	}
	return frame * n
}

// vp8Chain follows an RTP VP8 stream (RFC 7741) as a decoder would: a frame is received
// when its last packet (the marker) arrives with none missing since its first, and
// decodable when it is a key frame or follows a decodable frame with nothing lost between.
type vp8Chain struct {
	started  bool
	lastSeq  uint16
	inFrame  bool
	frameTS  uint32
	frameKey bool
	gap      bool // a packet of this frame is missing
	broken   bool // a frame was lost since the last decodable one: wait for a key frame
}

// push takes one packet; it says whether it completed a frame, and whether that frame
// was decodable.
func (c *vp8Chain) push(seq uint16, ts uint32, marker bool, payload []byte) (complete, decodable bool) {
	lost := c.started && seq != c.lastSeq+1
	c.started, c.lastSeq = true, seq
	start, key := vp8Start(payload)
	if lost {
		c.gap = true
		c.broken = true
	}
	if start {
		c.inFrame, c.frameTS, c.frameKey, c.gap = true, ts, key, false
	} else if !c.inFrame || ts != c.frameTS {
		c.inFrame, c.gap = false, true
	}
	if !marker {
		return false, false
	}
	complete = c.inFrame && !c.gap
	c.inFrame = false
	if !complete {
		c.broken = true
		return false, false
	}
	if c.frameKey {
		c.broken = false
	}
	return true, !c.broken
}

// vp8Start reads the payload descriptor: whether the packet starts a frame and whether
// that frame is a key frame.
func vp8Start(p []byte) (start, key bool) {
	if len(p) < 1 {
		return false, false
	}
	i := 1
	if p[0]&0x80 != 0 { // X: extensions follow
		if len(p) < 2 {
			return false, false
		}
		x := p[1]
		i = 2
		if x&0x80 != 0 { // I: picture id, 7 or 15 bits
			if len(p) <= i {
				return false, false
			}
			if p[i]&0x80 != 0 {
				i += 2
			} else {
				i++
			}
		}
		if x&0x40 != 0 { // L: TL0PICIDX
			i++
		}
		if x&0x30 != 0 { // T or K: TID/Y/KEYIDX
			i++
		}
	}
	start = p[0]&0x10 != 0 && p[0]&0x07 == 0
	if !start || len(p) <= i {
		return start, false
	}
	return true, p[i]&0x01 == 0
}
