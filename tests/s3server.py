"""A real S3-compatible server (moto in server mode) on a loopback port, for the tests
and for benchmarks/bench_load.py. No mock of embrm: Lance talks S3 to it over HTTP."""
from __future__ import annotations

import os
import sys
from pathlib import Path


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class S3Server:
    """A real S3-compatible server (moto in server mode) on a loopback port, with
    credentials checked: an IAM user's key works, anything else is refused."""

    SECRET_HINT = "embrm-test-secret"

    def __init__(self, tmp: Path):
        import subprocess
        import time
        import urllib.request

        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": "4", "MOTO_ALLOW_NONEXISTENT_REGION": "true"}
        self.log = open(tmp / "moto.log", "w")
        self.proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                                     stdout=self.log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(self.endpoint + "/moto-api/data.json", timeout=2).read()
                break
            except OSError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError("moto server did not start") from None
                time.sleep(0.2)
        import boto3

        boot = dict(endpoint_url=self.endpoint, region_name="us-east-1", aws_access_key_id="boot",
                    aws_secret_access_key="boot")
        iam = boto3.client("iam", **boot)  # the first requests are unauthenticated: make a user
        iam.create_user(UserName="embrm")
        iam.put_user_policy(UserName="embrm", PolicyName="all", PolicyDocument='{"Version": "2012-10-17", '
                            '"Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}')
        key = iam.create_access_key(UserName="embrm")["AccessKey"]
        self.key_id, self.secret = key["AccessKeyId"], key["SecretAccessKey"]
        self.client("s3").create_bucket(Bucket="embrm")

    def env(self, secret: str | None = None) -> dict[str, str]:
        return {"AWS_ACCESS_KEY_ID": self.key_id, "AWS_SECRET_ACCESS_KEY": secret or self.secret,
                "AWS_REGION": "us-east-1", "AWS_ENDPOINT_URL": self.endpoint}

    def client(self, service: str):
        import boto3

        return boto3.client(service, endpoint_url=self.endpoint, region_name="us-east-1",
                            aws_access_key_id=self.key_id, aws_secret_access_key=self.secret)

    def keys(self, prefix: str) -> list[str]:
        out, token = [], None
        while True:
            kw = {"Bucket": "embrm", "Prefix": prefix, **({"ContinuationToken": token} if token else {})}
            page = self.client("s3").list_objects_v2(**kw)
            out += [o["Key"] for o in page.get("Contents", [])]
            if not page.get("IsTruncated"):
                return out
            token = page["NextContinuationToken"]

    def stop(self) -> None:
        import signal

        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except Exception:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self.log.close()
