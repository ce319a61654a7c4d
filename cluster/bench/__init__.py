"""cluster-bench: a side-by-side benchmark of zraft (and optionally etcd and PySyncObj) on this machine.

Modules, each with one job:

    options          command-line arguments -> BenchOptions
    workloads        the workloads: key/value generation and the asynchronous operation of one load slot
    stats            percentiles, log-bucketed latency histograms
    ipc              length-prefixed msgpack frames between the bench and its worker processes
    loadgen          inside a worker: a closed loop keeping N operations in flight against one driver, timed
    worker           the worker process main (a load generator, or a PySyncObj node that also generates load)
    drivers          inside a worker: the zraft and etcd client drivers (each client's asynchronous API)
    pysyncobj_node   inside a worker: a PySyncObj node with a replicated dict, and its driver
    pool             in the bench: start worker processes and talk to them
    system           what the runner needs from a system under test; server processes
    ports            free loopback port blocks for the clusters
    procstats        CPU seconds and peak RSS of a process, from /proc
    zraft_cluster    start/stop a local zraft cluster through bin/cluster-node; its fsync counters
    etcd_cluster     start/stop a local 3-member etcd; its fsync counters from /metrics
    pysyncobj_cluster  start/stop 3 PySyncObj node processes
    runner           run every (workload, concurrency, system) cell, alternating the systems
    report           the printed table and the JSON document
    plot             the PNG (throughput vs concurrency, latency distribution)
    progress         the progress line on stderr
    main             cluster-bench's main()
"""
