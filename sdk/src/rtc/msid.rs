//! Which remote track each of the subscriber connection's media lines carries, read from
//! the server's offer: livekit-server names the publisher and the track in each line's
//! msid (`a=msid:<PA_sid>|<TR_sid> <TR_sid>`) and reuses lines for other tracks later, so
//! the map is read afresh from every offer.

/// A media line the server sends on, and the track it carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct OfferedTrack {
    /// The line's mid.
    pub mid: String,
    /// The publisher's participant sid (`PA_…`), if the msid names one.
    pub participant_sid: Option<String>,
    /// The track sid (`TR_…`).
    pub track_sid: String,
}

/// The media lines of `sdp` (an offer from the server) that carry a track to us: not
/// rejected (port 0), not inactive or receive-only on the server's side, with a LiveKit
/// track sid in their msid.
pub(crate) fn offered_tracks(sdp: &str) -> Vec<OfferedTrack> {
    let mut found = Vec::new();
    for section in sdp.split("\nm=").skip(1) {
        let mut lines = section.lines();
        let header = lines.next().unwrap_or_default();
        if !(header.starts_with("audio") || header.starts_with("video")) {
            continue;
        }
        let rejected = header.split_whitespace().nth(1) == Some("0");
        let (mut mid, mut msid, mut sends) = (None, None, true);
        for line in lines.map(str::trim) {
            if let Some(value) = line.strip_prefix("a=mid:") {
                mid = Some(value.to_owned());
            } else if let Some(value) = line.strip_prefix("a=msid:") {
                msid = Some(value.to_owned());
            } else if line == "a=inactive" || line == "a=recvonly" {
                sends = false;
            }
        }
        let (Some(mid), Some(msid)) = (mid, msid) else { continue };
        if rejected || !sends {
            continue;
        }
        let tokens: Vec<&str> = msid.split(|c: char| c == '|' || c.is_whitespace()).collect();
        let named =
            |prefix: &str| tokens.iter().find(|t| t.starts_with(prefix)).map(|t| (*t).to_owned());
        if let Some(track_sid) = named("TR_") {
            found.push(OfferedTrack { mid, participant_sid: named("PA_"), track_sid });
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    const OFFER: &str = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n\
        m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\na=mid:0\r\n\
        m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:1\r\na=sendonly\r\na=msid:PA_bob|TR_mic TR_mic\r\n\
        m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:2\r\na=sendonly\r\na=msid:PA_bob|TR_cam TR_cam\r\n\
        m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:3\r\na=inactive\r\na=msid:PA_eve|TR_old TR_old\r\n\
        m=audio 0 UDP/TLS/RTP/SAVPF 111\r\na=mid:4\r\na=sendonly\r\na=msid:PA_eve|TR_gone TR_gone\r\n";

    #[test]
    fn lines_the_server_sends_on_name_their_tracks() {
        let tracks = offered_tracks(OFFER);
        assert_eq!(
            tracks,
            vec![
                OfferedTrack {
                    mid: "1".into(),
                    participant_sid: Some("PA_bob".into()),
                    track_sid: "TR_mic".into()
                },
                OfferedTrack {
                    mid: "2".into(),
                    participant_sid: Some("PA_bob".into()),
                    track_sid: "TR_cam".into()
                },
            ],
            "inactive and rejected lines carry nothing"
        );
    }
}
