"""The replicated key-value state machine: keyspace and revisions, client sessions, snapshot encoding."""
