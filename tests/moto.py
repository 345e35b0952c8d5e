"""Run moto's S3 emulator (``moto[server]`` from PyPI) on 127.0.0.1 for a test.

moto is an emulator of the S3 API, not S3: it keeps objects in memory and implements the
calls files_app makes (ranged GET, HEAD, multipart uploads, DELETE) as AWS documents
them. None of MinIO, Garage or SeaweedFS can be installed here.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from tests.processes import stop, wait_listening
from tests.servers import free_port

BUCKET = "minicloud-files"
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@dataclass
class Moto:
    """A running moto server with one bucket."""

    url: str
    process: subprocess.Popen[bytes]

    @property
    def env(self) -> dict[str, str]:
        """minicloud's environment for ``STORAGES["s3"]`` on this server."""
        return {
            **CREDENTIALS,
            "MINICLOUD_S3_BUCKET": BUCKET,
            "MINICLOUD_S3_ENDPOINT_URL": self.url,
        }

    def storage(self) -> dict[str, Any]:
        """A ``STORAGES`` entry for the bucket on this server (django-storages' S3Storage;
        the credentials come from the environment: CREDENTIALS)."""
        return {
            "BACKEND": "storages.backends.s3.S3Storage",
            "OPTIONS": {"bucket_name": BUCKET, "endpoint_url": self.url},
        }

    def client(self) -> Any:
        import boto3  # type: ignore[import-untyped]

        return boto3.client(
            "s3",
            endpoint_url=self.url,
            aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
            region_name=CREDENTIALS["AWS_DEFAULT_REGION"],
        )

    def objects(self) -> dict[str, bytes]:
        """Return every object of the bucket: key -> bytes."""
        client = self.client()
        listed = client.list_objects_v2(Bucket=BUCKET).get("Contents", [])
        return {
            item["Key"]: client.get_object(Bucket=BUCKET, Key=item["Key"])["Body"].read()
            for item in listed
        }


@contextmanager
def running_moto() -> Iterator[Moto]:
    """Start moto's server on a free port, create the bucket, stop it afterwards."""
    port = free_port()
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )

        def output() -> str:
            log.seek(0)
            return log.read().decode(errors="replace")

        try:
            wait_listening(process, port, output, timeout=60)
            moto = Moto(f"http://127.0.0.1:{port}", process)
            moto.client().create_bucket(Bucket=BUCKET)
            yield moto
        finally:
            stop(process)
