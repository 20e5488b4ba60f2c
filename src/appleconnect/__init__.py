"""appleconnect."""
