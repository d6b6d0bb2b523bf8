"""Results: leaderboards, precision agreement, provenance and its verification."""
