//! meshedge-edge
