//! faultline: runs the real livekit-server and toxiproxy, puts faults in a LiveKit client's
//! path, and checks that the client recovers as it promises.
pub mod client;
pub mod cluster;
pub mod conform;
mod container;
pub mod event_log;
pub mod field;
pub mod flow;
mod http;
pub mod judge;
pub mod matrix;
pub mod net;
pub mod netns;
pub mod provision;
pub mod proxy;
pub mod record;
pub mod report;
pub mod room_service;
pub mod scenario;
pub mod server;
pub mod sim;
pub mod startup;
pub mod supervise;
pub mod token;
pub mod toxiproxy;
pub mod vocab;
