//! The client seam: any LiveKit SDK under test, behind one interface, reporting events in
//! faultline's shared vocabulary ([`ClientEvent`]).

pub mod event;

pub use event::{ClientEvent, Lifecycle, Observed};
