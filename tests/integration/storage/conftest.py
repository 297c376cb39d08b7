"""Fixtures of the storage integration tests: the storage servers (tests/support/storage)."""

from tests.support.storage.fixtures import ceph_cluster as ceph_cluster
from tests.support.storage.fixtures import iscsi_target as iscsi_target
from tests.support.storage.fixtures import nfs_dir as nfs_dir
from tests.support.storage.fixtures import nfs_export as nfs_export
