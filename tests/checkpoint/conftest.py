"""Fixtures of the checkpoint tests: a real S3 endpoint served by a local moto server."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.ports import free_port as _free_port


@dataclass(frozen=True)
class S3Endpoint:
    """A running moto S3 server with one bucket."""

    endpoint: str  # host:port
    bucket: str
    access_key: str = "test"
    secret_key: str = "test"
    region: str = "us-east-1"

    # allow_delayed_open makes pyarrow send small files as one PutObject; moto 5.2.1 answers
    # CompleteMultipartUpload with a wrong XML root tag that pyarrow rejects
    # (getmoto/moto#10055), and single PUTs are what checkpoint files use anyway.

    def filesystem(self):
        import pyarrow.fs as pafs

        return pafs.S3FileSystem(
            endpoint_override=self.endpoint,
            scheme="http",
            access_key=self.access_key,
            secret_key=self.secret_key,
            region=self.region,
            allow_delayed_open=True,
        )

    def uri(self, prefix: str) -> str:
        """An s3:// URI with the endpoint and credentials in it, as pyarrow parses them."""
        return (
            f"s3://{self.access_key}:{self.secret_key}@{self.bucket}/{prefix}"
            f"?endpoint_override={self.endpoint}&scheme=http&region={self.region}"
            "&allow_delayed_open=true"
        )


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Endpoint]:
    """Start ``moto.server.ThreadedMotoServer`` on a free port, create a bucket, stop at the end."""
    boto3 = pytest.importorskip("boto3")
    moto_server = pytest.importorskip("moto.server")
    port = _free_port()
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        endpoint = S3Endpoint(endpoint=f"127.0.0.1:{port}", bucket="raystream-ckpt")
        client = boto3.client(
            "s3",
            endpoint_url=f"http://{endpoint.endpoint}",
            aws_access_key_id=endpoint.access_key,
            aws_secret_access_key=endpoint.secret_key,
            region_name=endpoint.region,
        )
        client.create_bucket(Bucket=endpoint.bucket)
        yield endpoint
    finally:
        server.stop()


@pytest.fixture
def s3_prefix() -> str:
    """A fresh key prefix per test so tests sharing the bucket do not see each other."""
    return f"ckpt-{uuid.uuid4().hex[:12]}"


# -- both keyed state backends ------------------------------------------------------------

BACKENDS = ["heap", "rocksdb"]


@pytest.fixture(params=BACKENDS)
def backend_kind(request) -> str:
    """Runs a test once per keyed state backend (the state suite holds for both)."""
    if request.param == "rocksdb":
        pytest.importorskip("rocksdict")
    return request.param


@pytest.fixture
def make_backend(backend_kind, tmp_path):
    """``make_backend(key_group_range, max_parallelism, clock=None)``: a new keyed backend of
    the parametrised kind (RocksDB ones live under ``tmp_path`` and are closed after the test)."""
    from raystream.checkpoint import HeapKeyedStateBackend, RocksDBKeyedStateBackend

    made = []

    def make(key_group_range, max_parallelism, clock=None, **kwargs):
        if backend_kind == "heap":
            b = HeapKeyedStateBackend(key_group_range, max_parallelism, clock=clock, **kwargs)
        else:
            b = RocksDBKeyedStateBackend(key_group_range, max_parallelism, clock, local_dir=str(tmp_path), **kwargs)
        made.append(b)
        return b

    make.kind = backend_kind
    yield make
    for b in made:
        b.close()
