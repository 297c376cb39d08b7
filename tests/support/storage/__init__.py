"""Storage servers for the storage tests, on 127.0.0.1 and torn down after use.

- ``nfs.nfs_server()``: an NFSv3 export by nfs-ganesha (QEMU: ``nfs://127.0.0.1/<dir>/<file>``)
- ``iscsi.iscsi_target()``: a tgtd target with sparse-file LUNs (``iscsi://127.0.0.1:P/<iqn>/<n>``)
- ``ceph.ceph_cluster()``: a single-node Ceph with an RBD pool and a cephx client for libvirt

Each is a context manager yielding a small dataclass with what a client needs, raising
``daemons.Unavailable`` when the machine cannot run it. ``fixtures`` wraps them for pytest.
"""
