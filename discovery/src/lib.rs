//! meshedge-discovery: DNS-SD discovery (not built yet).
