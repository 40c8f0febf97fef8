//! meshedge-agent
