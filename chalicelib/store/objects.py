"""S3 behind one small class, handed its client (tests hand it a moto one)."""

from __future__ import annotations

from typing import Any, Callable

from chalicelib.domain.errors import NotFound

IMMUTABLE = "public, max-age=31536000, immutable"
UPLOAD_TYPE = "application/octet-stream"  # what every form uploads: gradients, weights, batch files


class ObjectStore:
    def __init__(self, s3: Any, bucket: str, public_base_url: str):
        self._s3 = s3
        self.bucket = bucket
        self.public_base_url = public_base_url

    def put(
        self, key: str, body: bytes, content_type: str = "application/octet-stream", cache_control: str = IMMUTABLE
    ) -> None:
        self._s3.put_object(
            Bucket=self.bucket, Key=key, Body=body, ContentType=content_type, CacheControl=cache_control
        )

    def get(self, key: str) -> bytes:
        """The object's bytes; NotFound where there is no such object."""
        try:
            return self._s3.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        except self._s3.exceptions.NoSuchKey:
            raise NotFound(f"no object {key}")

    def size(self, key: str) -> int | None:
        """Object length, or None where there is no such object."""
        try:
            return int(self._s3.head_object(Bucket=self.bucket, Key=key)["ContentLength"])
        except self._s3.exceptions.ClientError as err:
            if err.response["Error"]["Code"] in ("404", "NoSuchKey", "NotFound"):
                return None
            raise

    def sizes(self, prefix: str) -> dict[str, int]:
        """Every key under a prefix with its length."""
        found: dict[str, int] = {}
        for page in self._s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
            for item in page.get("Contents", []):
                found[item["Key"]] = int(item["Size"])
        return found

    def delete_page(self, prefix: str, until: float, clock: Callable[[], float], page: int = 1000) -> tuple[int, bool]:
        """Delete the objects under a prefix, `page` at a time (S3's most per
        call) until `clock` passes `until` (one page at least): (how many, whether none is left)."""
        done = 0
        while True:
            listed = self._s3.list_objects_v2(Bucket=self.bucket, Prefix=prefix, MaxKeys=page).get("Contents", [])
            if listed:
                chunk = [{"Key": item["Key"]} for item in listed]
                self._s3.delete_objects(Bucket=self.bucket, Delete={"Objects": chunk, "Quiet": True})
                done += len(chunk)
            if len(listed) < page:
                return done, True
            if clock() >= until:
                return done, False

    def presigned_post(
        self,
        key: str,
        size: int | tuple[int, int],
        expires: int,
        prefix: bool = False,
        content_encoding: str = "identity",
        cache_control: str | None = None,
    ) -> dict[str, Any]:
        """A browser-usable POST form for exactly `size` bytes (or a (least,
        most) range) at `key`, or with prefix=True at any key under `key`,
        signed with SigV4 (the client's config). S3 itself enforces every
        condition of its policy: the bucket, the key, the length, the
        Content-Type, and the Content-Encoding and Cache-Control the object is
        stored and served with, each exactly."""
        least, most = size if isinstance(size, tuple) else (size, size)
        fields: dict[str, str] = {"Content-Type": UPLOAD_TYPE}
        if content_encoding != "identity":
            fields["Content-Encoding"] = content_encoding
        if cache_control:
            fields["Cache-Control"] = cache_control
        conditions: list[Any] = [["content-length-range", least, most], *({k: v} for k, v in fields.items())]
        if prefix:
            conditions.append(["starts-with", "$key", key])
            key = key + "${filename}"
        post = self._s3.generate_presigned_post(
            Bucket=self.bucket, Key=key, Fields=fields, Conditions=conditions, ExpiresIn=expires
        )
        return {"url": post["url"], "fields": post["fields"]}

    def public_url(self, key: str) -> str:
        return self.public_base_url + key
