// Command driver is faultline's driver for the LiveKit Go SDK (server-sdk-go v2, on
// pion): it owns one lksdk.Room, reads faultline's commands from stdin and writes replies
// and SDK events to stdout, one JSON object per line (docs/driver-protocol.md, version 2).
//
// It only translates: it never retries, never decides what a reconnect is, and reports
// every SDK callback it is given, when it is given it. Everything else (its own log and the
// SDK's, which goes through the standard logger) is written to stderr with the access token
// scrubbed out.
//
// Media: publish_track feeds a synthetic track (Opus silence every 20 ms, or faultline's
// flat-grey VP8 picture at 30 fps: a key frame first, after an unmute and whenever the
// server asks with a PLI or FIR, inter frames otherwise) until it is unpublished. Every
// subscribed remote track is read as an application would read it (TrackRemote.ReadRTP),
// and the `media` counters come from what arrived: audio in 10 ms units of Opus received,
// video frames received whole and frames a decoder could decode (a key frame, then an
// unbroken chain of complete frames; a break asks the sender for a key frame, as a decoder
// does).
//
// Flags (given by the harness):
//
//	-vp8-key HEX    the synthetic camera's key frame
//	-vp8-delta HEX  its inter frame
//
// Environment: FAULTLINE_CONNECT_TIMEOUT_S bounds one connect (default 20).
package main

import (
	"bufio"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"os"
	"regexp"
	"runtime/debug"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/livekit/protocol/livekit"
	lksdk "github.com/livekit/server-sdk-go/v2"
)

const (
	protocolVersion = 2
	sdkName         = "go"
	// The SDK's speaker simulation always asks for this many seconds (SimulateSpeakerUpdateInterval).
	sdkSpeakerSecs  = lksdk.SimulateSpeakerUpdateInterval
	eofExitDeadline = 4500 * time.Millisecond
)

// ---------------------------------------------------------------------------------------
// Output: stdout carries protocol lines only.
// ---------------------------------------------------------------------------------------

var (
	outMu sync.Mutex
	out   *os.File
)

// protectStdout keeps a private copy of stdout for the protocol and points fd 1 at
// stderr, so nothing else in the process can write a non-protocol line onto it.
func protectStdout() {
	fd, err := syscall.Dup(1)
	if err != nil {
		log.Fatalf("duplicating stdout: %v", err)
	}
	if err := syscall.Dup3(2, 1, 0); err != nil {
		log.Fatalf("pointing stdout at stderr: %v", err)
	}
	out = os.NewFile(uintptr(fd), "protocol")
	os.Stdout = os.Stderr
}

func emit(obj map[string]any) {
	line, err := json.Marshal(obj)
	if err != nil {
		log.Printf("cannot encode a protocol line: %v", err)
		return
	}
	outMu.Lock()
	defer outMu.Unlock()
	if _, err := out.Write(append(line, '\n')); err != nil {
		log.Printf("stdout is gone (%v); nothing more can be reported", err)
	}
}

func event(name string, fields map[string]any) {
	obj := map[string]any{"type": "event", "event": name}
	for k, v := range fields {
		obj[k] = v
	}
	if name != "media" {
		log.Printf("event %s %v", name, brief(fields))
	}
	emit(obj)
}

func brief(fields map[string]any) map[string]any {
	if p, ok := fields["payload"].(string); ok {
		c := map[string]any{}
		for k, v := range fields {
			c[k] = v
		}
		c["payload"] = fmt.Sprintf("<%d b64 chars>", len(p))
		return c
	}
	return fields
}

func replyOK(id int64, extra map[string]any) {
	obj := map[string]any{"type": "reply", "id": id, "ok": true}
	for k, v := range extra {
		obj[k] = v
	}
	log.Printf("reply %d ok", id)
	emit(obj)
}

func replyErr(id int64, unsupported bool, format string, args ...any) {
	msg := scrub(fmt.Sprintf(format, args...))
	obj := map[string]any{"type": "reply", "id": id, "ok": false, "error": msg}
	if unsupported {
		obj["unsupported"] = true
	}
	log.Printf("reply %d failed: %s (unsupported: %v)", id, msg, unsupported)
	emit(obj)
}

// ---------------------------------------------------------------------------------------
// Secrets never reach the log.
// ---------------------------------------------------------------------------------------

var (
	secretsMu sync.Mutex
	secrets   []string
	jwtRe     = regexp.MustCompile(`eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]+`)
	queryRe   = regexp.MustCompile(`(access_token=)[^&\s"']+`)
)

func rememberSecret(s string) {
	if s == "" {
		return
	}
	secretsMu.Lock()
	secrets = append(secrets, s)
	secretsMu.Unlock()
}

func scrub(text string) string {
	secretsMu.Lock()
	for _, s := range secrets {
		text = strings.ReplaceAll(text, s, "<redacted>")
	}
	secretsMu.Unlock()
	text = queryRe.ReplaceAllString(text, "${1}<redacted>")
	return jwtRe.ReplaceAllString(text, "<redacted-jwt>")
}

type scrubbingWriter struct{}

func (scrubbingWriter) Write(p []byte) (int, error) {
	if _, err := os.Stderr.WriteString(scrub(string(p))); err != nil {
		return 0, err
	}
	return len(p), nil
}

// ---------------------------------------------------------------------------------------
// The driver: one room, the local sources, the subscriptions being counted.
// ---------------------------------------------------------------------------------------

type driver struct {
	mu             sync.Mutex
	room           *lksdk.Room
	connecting     bool
	connectTimeout time.Duration
	video          videoFrames
	local          map[string]*source       // by source name
	subs           map[string]*subscription // by track sid
	retired        map[string]counts        // an ended subscription's counts, by track sid
	reporting      bool
}

func sourceName(s livekit.TrackSource) string {
	switch s {
	case livekit.TrackSource_MICROPHONE:
		return "microphone"
	case livekit.TrackSource_CAMERA:
		return "camera"
	}
	return strings.ToLower(s.String())
}

func identityOf(p lksdk.Participant) any {
	if p == nil || p.Identity() == "" {
		return nil
	}
	return p.Identity()
}

// callbacks maps every SDK callback faultline has a name for onto an event.
func (d *driver) callbacks(room **lksdk.Room) *lksdk.RoomCallback {
	cb := lksdk.NewRoomCallback()
	cb.OnReconnecting = func() { event("reconnecting", nil) }
	cb.OnReconnected = func() { event("reconnected", nil) }
	cb.OnDisconnected = func() {
		reason := "UNKNOWN_REASON"
		if r := *room; r != nil {
			if name, ok := livekit.DisconnectReason_name[int32(r.DisconnectReason())]; ok {
				reason = name
			}
		}
		event("disconnected", map[string]any{"reason": reason})
		go d.stopMedia()
	}
	cb.OnParticipantConnected = func(rp *lksdk.RemoteParticipant) {
		event("participant_connected", map[string]any{"identity": rp.Identity(), "sid": rp.SID()})
	}
	cb.OnParticipantDisconnected = func(rp *lksdk.RemoteParticipant) {
		event("participant_disconnected", map[string]any{"identity": rp.Identity(), "sid": rp.SID()})
	}
	cb.OnActiveSpeakersChanged = func(ps []lksdk.Participant) {
		speakers := make([]string, 0, len(ps))
		for _, p := range ps {
			speakers = append(speakers, p.Identity())
		}
		event("active_speakers_changed", map[string]any{"speakers": speakers})
	}
	cb.OnDataPacket = func(data lksdk.DataPacket, params lksdk.DataReceiveParams) {
		user, ok := data.(*lksdk.UserDataPacket)
		if !ok {
			log.Printf("sdk data packet %T (not user data)", data)
			return
		}
		var topic, from any
		if user.Topic != "" {
			topic = user.Topic
		}
		if params.SenderIdentity != "" {
			from = params.SenderIdentity
		}
		// The SDK does not say whether the packet came reliable or lossy.
		event("data_received", map[string]any{
			"payload":  base64.StdEncoding.EncodeToString(user.Payload),
			"topic":    topic,
			"reliable": nil,
			"from":     from,
		})
	}
	cb.OnLocalTrackPublished = func(pub *lksdk.LocalTrackPublication, _ *lksdk.LocalParticipant) {
		event("local_track_published", map[string]any{"source": sourceName(pub.Source()), "sid": pub.SID()})
	}
	cb.OnLocalTrackUnpublished = func(pub *lksdk.LocalTrackPublication, _ *lksdk.LocalParticipant) {
		event("local_track_unpublished", map[string]any{"source": sourceName(pub.Source()), "sid": pub.SID()})
	}
	remote := func(name string) func(*lksdk.RemoteTrackPublication, *lksdk.RemoteParticipant) {
		return func(pub *lksdk.RemoteTrackPublication, rp *lksdk.RemoteParticipant) {
			event(name, map[string]any{"from": rp.Identity(), "source": sourceName(pub.Source()), "sid": pub.SID()})
		}
	}
	cb.OnTrackPublished = remote("track_published")
	cb.OnTrackUnpublished = remote("track_unpublished")
	cb.OnTrackSubscribed = func(track *webrtcTrack, pub *lksdk.RemoteTrackPublication, rp *lksdk.RemoteParticipant) {
		event("track_subscribed", map[string]any{"from": rp.Identity(), "source": sourceName(pub.Source()), "sid": pub.SID()})
		d.subscribe(track, pub, rp)
	}
	cb.OnTrackUnsubscribed = func(_ *webrtcTrack, pub *lksdk.RemoteTrackPublication, rp *lksdk.RemoteParticipant) {
		event("track_unsubscribed", map[string]any{"from": rp.Identity(), "source": sourceName(pub.Source()), "sid": pub.SID()})
		d.retire(pub.SID(), "unsubscribed")
	}
	cb.OnTrackSubscriptionFailed = func(sid string, rp *lksdk.RemoteParticipant) {
		event("track_subscription_failed", map[string]any{"from": rp.Identity(), "sid": sid})
	}
	muted := func(name string) func(lksdk.TrackPublication, lksdk.Participant) {
		return func(pub lksdk.TrackPublication, p lksdk.Participant) {
			if _, local := p.(*lksdk.LocalParticipant); local {
				log.Printf("sdk %s for the local %s track %s", name, sourceName(pub.Source()), pub.SID())
				return
			}
			event(name, map[string]any{"from": identityOf(p), "source": sourceName(pub.Source())})
		}
	}
	cb.OnTrackMuted = muted("track_muted")
	cb.OnTrackUnmuted = muted("track_unmuted")
	return cb
}

func (d *driver) currentRoom() *lksdk.Room {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.room
}

func connected(r *lksdk.Room) bool {
	return r != nil && r.ConnectionState() != lksdk.ConnectionStateDisconnected
}

// ---------------------------------------------------------------------------------------
// Commands
// ---------------------------------------------------------------------------------------

type command struct {
	ID           int64          `json:"id"`
	Op           string         `json:"op"`
	URL          string         `json:"url"`
	Token        string         `json:"token"`
	Options      map[string]any `json:"options"`
	Scenario     string         `json:"scenario"`
	Secs         *float64       `json:"secs"`
	Payload      string         `json:"payload"`
	Topic        *string        `json:"topic"`
	Reliable     *bool          `json:"reliable"`
	Destinations []string       `json:"destinations"`
	Source       string         `json:"source"`
	Muted        *bool          `json:"muted"`
}

func (d *driver) dispatch(line string) {
	var cmd command
	if err := json.Unmarshal([]byte(line), &cmd); err != nil {
		log.Printf("ignoring a line that is not a command (%v)", err)
		return
	}
	log.Printf("command %d %s", cmd.ID, cmd.Op)
	handlers := map[string]func(command){
		"connect":         d.opConnect,
		"simulate":        d.opSimulate,
		"publish":         d.opPublish,
		"state":           d.opState,
		"publish_track":   d.opPublishTrack,
		"unpublish_track": d.opUnpublishTrack,
		"mute_track":      d.opMuteTrack,
		"close":           d.opClose,
	}
	handler, ok := handlers[cmd.Op]
	if !ok {
		replyErr(cmd.ID, true, "unknown op %q", cmd.Op)
		return
	}
	go func() {
		defer func() {
			if p := recover(); p != nil {
				log.Printf("command %d panicked: %v\n%s", cmd.ID, p, debug.Stack())
				replyErr(cmd.ID, false, "%s: the driver failed: %v", cmd.Op, p)
			}
		}()
		handler(cmd)
	}()
}

func (d *driver) opConnect(cmd command) {
	rememberSecret(cmd.Token)
	if cmd.Options["reconnect_policy"] != nil {
		replyErr(cmd.ID, true, "connect: the Go SDK's reconnect policy is fixed (constants in engine.go); it cannot take reconnect_policy")
		return
	}
	if cmd.URL == "" || cmd.Token == "" {
		replyErr(cmd.ID, false, "connect: url and token are required strings")
		return
	}
	d.mu.Lock()
	if d.connecting || connected(d.room) {
		d.mu.Unlock()
		replyErr(cmd.ID, false, "connect: the room is already connected or connecting")
		return
	}
	d.connecting = true
	d.mu.Unlock()

	var room *lksdk.Room
	room = lksdk.NewRoom(d.callbacks(&room))
	started := time.Now()
	done := make(chan error, 1)
	go func() { done <- room.JoinWithToken(cmd.URL, cmd.Token, lksdk.WithAutoSubscribe(true)) }()
	select {
	case err := <-done:
		d.mu.Lock()
		d.connecting = false
		if err != nil {
			d.mu.Unlock()
			replyErr(cmd.ID, false, "connect: %v", err)
			return
		}
		d.room = room
		d.mu.Unlock()
		log.Printf("connected in %.3f s", time.Since(started).Seconds())
		event("connected", nil)
		replyOK(cmd.ID, nil)
	case <-time.After(d.connectTimeout):
		d.mu.Lock()
		d.connecting = false
		d.mu.Unlock()
		// A connect that outlives its reply leaves again if it ever succeeds.
		go func() {
			if <-done == nil {
				log.Printf("an abandoned connect succeeded late; disconnecting it")
				room.Disconnect()
			}
		}()
		replyErr(cmd.ID, false, "connect: the SDK did not connect within %.0f s", d.connectTimeout.Seconds())
	}
}

// scenarios maps faultline's spellings onto the SDK's SimulateScenario; the ones missing
// are ones the SDK cannot simulate against livekit-server v1.13.5.
var scenarios = map[string]lksdk.SimulateScenario{
	"signal-reconnect": lksdk.SimulateSignalReconnect,
	"force-tls":        lksdk.SimulateForceTLS,
	"speaker":          lksdk.SimulateSpeakerUpdate,
	"migration":        lksdk.SimulateMigration,
	"server-leave":     lksdk.SimulateServerLeave,
	"node-failure":     lksdk.SimulateNodeFailure,
}

var unsupportedScenarios = map[string]string{
	"full-reconnect":                          "the SDK's only full-reconnect simulation (SimulateLeaveRequestFullReconnect) asks the server for a request livekit-server v1.13.5 does not know",
	"disconnect-signal-on-resume":             "the SDK has no such scenario",
	"disconnect-signal-on-resume-no-messages": "the SDK has no such scenario",
	"force-tcp":                               "the SDK's SimulateForceTCP does nothing (pion has no active TCP candidates)",
}

func (d *driver) opSimulate(cmd command) {
	kind, ok := scenarios[cmd.Scenario]
	if !ok {
		why, known := unsupportedScenarios[cmd.Scenario]
		if !known {
			why = "unknown scenario"
		}
		replyErr(cmd.ID, true, "simulate %s: %s", cmd.Scenario, why)
		return
	}
	if cmd.Scenario == "speaker" && cmd.Secs != nil && *cmd.Secs != float64(sdkSpeakerSecs) {
		replyErr(cmd.ID, true, "simulate speaker: this SDK always simulates %d s, not %v s", sdkSpeakerSecs, *cmd.Secs)
		return
	}
	room := d.currentRoom()
	if !connected(room) {
		replyErr(cmd.ID, false, "simulate %s: the room is not connected", cmd.Scenario)
		return
	}
	room.Simulate(kind)
	replyOK(cmd.ID, nil)
}

func (d *driver) opPublish(cmd command) {
	payload, err := base64.StdEncoding.DecodeString(cmd.Payload)
	if err != nil {
		replyErr(cmd.ID, false, "publish: payload is not base64 (%v)", err)
		return
	}
	room := d.currentRoom()
	if !connected(room) {
		replyErr(cmd.ID, false, "publish: the room is not connected")
		return
	}
	packet := lksdk.UserData(payload)
	opts := []lksdk.DataPublishOption{lksdk.WithDataPublishReliable(cmd.Reliable == nil || *cmd.Reliable)}
	if cmd.Topic != nil && *cmd.Topic != "" {
		opts = append(opts, lksdk.WithDataPublishTopic(*cmd.Topic))
	}
	if len(cmd.Destinations) > 0 {
		opts = append(opts, lksdk.WithDataPublishDestination(cmd.Destinations))
	}
	if err := room.LocalParticipant.PublishDataPacket(packet, opts...); err != nil {
		replyErr(cmd.ID, false, "publish: %v", err)
		return
	}
	replyOK(cmd.ID, nil)
}

func (d *driver) opState(cmd command) {
	replyOK(cmd.ID, map[string]any{"state": d.readState()})
}

// readState reads the room from the SDK as it is now.
func (d *driver) readState() map[string]any {
	room := d.currentRoom()
	state := map[string]any{
		"connection_state": "disconnected",
		"room_sid":         nil,
		"local_sid":        nil,
		"local_identity":   nil,
		"remotes":          []any{},
		"local_tracks":     []any{},
		"subscriptions":    []any{},
	}
	if room == nil {
		return state
	}
	switch room.ConnectionState() {
	case lksdk.ConnectionStateConnected:
		state["connection_state"] = "connected"
	case lksdk.ConnectionStateReconnecting:
		state["connection_state"] = "reconnecting"
	}
	// Room.SID blocks until the server has named the room.
	sid := make(chan string, 1)
	go func() { sid <- room.SID() }()
	select {
	case s := <-sid:
		if s != "" {
			state["room_sid"] = s
		}
	case <-time.After(500 * time.Millisecond):
	}
	lp := room.LocalParticipant
	if s := lp.SID(); s != "" {
		state["local_sid"] = s
	}
	if id := lp.Identity(); id != "" {
		state["local_identity"] = id
	}
	var remotes, subscriptions, localTracks []any
	for _, rp := range room.GetRemoteParticipants() {
		remotes = append(remotes, map[string]any{"identity": rp.Identity(), "sid": rp.SID()})
		for _, pub := range rp.TrackPublications() {
			if pub.IsSubscribed() {
				subscriptions = append(subscriptions, map[string]any{"from": rp.Identity(), "source": sourceName(pub.Source()), "sid": pub.SID()})
			}
		}
	}
	for _, pub := range lp.TrackPublications() {
		localTracks = append(localTracks, map[string]any{"source": sourceName(pub.Source()), "sid": pub.SID(), "muted": pub.IsMuted()})
	}
	if remotes != nil {
		state["remotes"] = remotes
	}
	if subscriptions != nil {
		state["subscriptions"] = subscriptions
	}
	if localTracks != nil {
		state["local_tracks"] = localTracks
	}
	return state
}

func (d *driver) opClose(cmd command) {
	room := d.currentRoom()
	if connected(room) {
		left := make(chan struct{})
		go func() { room.Disconnect(); close(left) }()
		select {
		case <-left:
		case <-time.After(10 * time.Second):
			replyErr(cmd.ID, false, "close: the SDK did not disconnect within 10 s")
			return
		}
	}
	d.stopMedia()
	replyOK(cmd.ID, nil)
}

// ---------------------------------------------------------------------------------------
// Start-up
// ---------------------------------------------------------------------------------------

// builtWith names the pion/webrtc build the SDK was linked with.
func builtWith() string {
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return "build information unavailable"
	}
	for _, dep := range info.Deps {
		if dep.Path == "github.com/pion/webrtc/v4" {
			if dep.Replace != nil {
				return fmt.Sprintf("pion/webrtc %s as %s %s, %s", dep.Version, dep.Replace.Path, dep.Replace.Version, info.GoVersion)
			}
			return fmt.Sprintf("pion/webrtc %s, %s", dep.Version, info.GoVersion)
		}
	}
	return info.GoVersion
}

func main() {
	keyHex := flag.String("vp8-key", "", "the synthetic camera's VP8 key frame, in hex")
	deltaHex := flag.String("vp8-delta", "", "its VP8 inter frame, in hex")
	flag.Parse()
	log.SetFlags(log.Ltime | log.Lmicroseconds)
	log.SetOutput(scrubbingWriter{})
	protectStdout()

	key, errKey := hex.DecodeString(*keyHex)
	delta, errDelta := hex.DecodeString(*deltaHex)
	if errKey != nil || errDelta != nil || len(key) == 0 || len(delta) == 0 {
		log.Fatalf("-vp8-key and -vp8-delta must give the synthetic camera's frames in hex")
	}
	timeout := 20 * time.Second
	if s := os.Getenv("FAULTLINE_CONNECT_TIMEOUT_S"); s != "" {
		if secs, err := strconv.ParseFloat(s, 64); err == nil && secs > 0 {
			timeout = time.Duration(secs * float64(time.Second))
		}
	}
	d := &driver{
		connectTimeout: timeout,
		video:          videoFrames{key: key, delta: delta},
		local:          map[string]*source{},
		subs:           map[string]*subscription{},
		retired:        map[string]counts{},
	}
	emit(map[string]any{
		"type": "hello", "protocol": protocolVersion, "sdk": sdkName,
		"sdk_version": lksdk.Version, "detail": builtWith(),
	})
	log.Printf("hello: server-sdk-go %s (%s)", lksdk.Version, builtWith())

	lines := bufio.NewScanner(os.Stdin)
	lines.Buffer(make([]byte, 1<<16), 1<<24)
	for lines.Scan() {
		if line := strings.TrimSpace(lines.Text()); line != "" {
			d.dispatch(line)
		}
	}
	// stdin closed: leave the room if still in it, and exit in time whatever happens.
	time.AfterFunc(eofExitDeadline, func() {
		log.Printf("exit deadline reached; exiting now")
		os.Exit(0)
	})
	if room := d.currentRoom(); connected(room) {
		log.Printf("stdin closed: disconnecting")
		room.Disconnect()
	}
	d.stopMedia()
	log.Printf("exiting")
}

// sortedTracks orders a media event's tracks as the other drivers do.
func sortedTracks(tracks []map[string]any) []map[string]any {
	sort.Slice(tracks, func(i, j int) bool {
		a, b := tracks[i], tracks[j]
		if a["from"] != b["from"] {
			return fmt.Sprint(a["from"]) < fmt.Sprint(b["from"])
		}
		if a["source"] != b["source"] {
			return fmt.Sprint(a["source"]) < fmt.Sprint(b["source"])
		}
		return fmt.Sprint(a["sid"]) < fmt.Sprint(b["sid"])
	})
	return tracks
}
