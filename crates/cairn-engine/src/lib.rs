//! The cairn engine: the executor that turns the domain's decisions into
//! effects through the ports, plus iteration and gates.
//!
//! What it is: the imperative shell around `cairn-domain`'s pure core. Its
//! loop is: decide, start the actions through ports, record each outcome as
//! events durably, apply them, decide again.
//!
//! What it deliberately does not do: know any technology. It never names
//! sled, reqwest or a terminal; it sees only `cairn-ports` traits.
//!
//! May depend on: `cairn-domain`, `cairn-ports`, tokio. Never on an adapter
//! or the app.
