//! HTTP/3 over QUIC on the listener's port (UDP). Not served yet.
