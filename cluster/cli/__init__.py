"""The command-line tools: `cluster-ctl` (talk to a cluster) and `cluster-local` (run one here)."""
