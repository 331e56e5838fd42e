//! faultline: runs the real livekit-server and toxiproxy, puts faults in a LiveKit client's
//! path, and checks that the client recovers as it promises.
pub mod net;
pub mod proxy;
