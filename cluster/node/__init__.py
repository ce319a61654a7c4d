"""A node process: the runtime that drives NodeActor with real sockets, disk and clock; admission of
incoming frames; advertising client URLs; graceful stop; the status answer; configuration; the
`cluster-node` main; and the embeddable Node (embedded.py), the same node on a thread of an application."""
