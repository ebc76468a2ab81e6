//! Is the backend ready? The [`probe`] of a start waits, in order, for the
//! backend's `READY=1` on its own [`notify_socket`], every ready address
//! accepting ([`connect`]), and the ready [`command`].

pub mod command;
pub mod connect;
pub mod notify_socket;
pub mod probe;
