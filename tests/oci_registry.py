"""Dev Container features as OCI artifacts, for tests: the tar, the manifest, a fake registry, a push.

`FakeRegistry` serves GET /v2/NAME/manifests/REF and /v2/NAME/blobs/DIGEST on
127.0.0.1 from a thread, optionally behind a ghcr.io-style anonymous bearer
challenge and with blobs redirected to another host name (localhost), and
records every request. `push` uploads a feature to a real registry over the
distribution API (POST and PUT blob uploads, PUT the manifest).
"""

import hashlib
import io
import json
import tarfile
import threading
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LAYER = "application/vnd.devcontainers.layer.v1+tar"
MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def digest(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


def feature_tar(meta, install="#!/bin/sh\necho installed\n", extra=(), gzip=False):
    """A feature's tar: ./devcontainer-feature.json, ./install.sh, and `extra` TarInfo/bytes pairs."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz" if gzip else "w") as tar:
        for name, data, mode in (("devcontainer-feature.json", json.dumps(meta).encode(), 0o644),
                                 ("install.sh", install.encode(), 0o755)):
            info = tarfile.TarInfo("./" + name)
            info.size, info.mode = len(data), mode
            tar.addfile(info, io.BytesIO(data))
        for info, data in extra:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def manifest_for(layer, config=b"{}"):
    """(manifest bytes, config blob) of a feature artifact as the devcontainers CLI publishes one."""
    body = {"schemaVersion": 2, "mediaType": MANIFEST,
            "config": {"mediaType": "application/vnd.devcontainers", "digest": digest(config), "size": len(config)},
            "layers": [{"mediaType": LAYER, "digest": digest(layer), "size": len(layer),
                        "annotations": {"org.opencontainers.image.title": "devcontainer-feature.tgz"}}]}
    return json.dumps(body).encode(), config


class FakeRegistry:
    def __init__(self, token=False, redirect=False):
        self.manifests = {}  # (name, tag or digest) -> bytes
        self.blobs = {}  # digest -> bytes
        self.requests = []  # (path, Authorization header or None)
        self.token, self.redirect = token, redirect
        registry = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                registry.requests.append((self.path, self.headers.get("Authorization")))
                registry.handle(self)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.host = f"127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def close(self):
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    def add(self, name, tag, layer):
        """Publish a feature layer under name:tag; returns the manifest digest."""
        body, config = manifest_for(layer)
        self.blobs[digest(layer)] = layer
        self.blobs[digest(config)] = config
        self.manifests[(name, tag)] = body
        self.manifests[(name, digest(body))] = body
        return digest(body)

    def handle(self, h):
        path = h.path.split("?")[0]
        if path == "/token":
            return self.send(h, 200, json.dumps({"token": "anon-token"}).encode(), "application/json")
        if path.startswith("/cdn/"):
            data = self.blobs.get(path[len("/cdn/"):])
            return self.send(h, 200 if data is not None else 404, data or b"")
        if self.token and h.headers.get("Authorization") != "Bearer anon-token":
            return self.send(h, 401, b'{"errors":[{"code":"UNAUTHORIZED"}]}', "application/json", {
                "WWW-Authenticate": f'Bearer realm="http://{self.host}/token",service="{self.host}",'
                                    f'scope="repository:x:pull"'})
        parts = path.split("/")
        if len(parts) >= 5 and parts[1] == "v2" and parts[-2] == "manifests":
            name = "/".join(parts[2:-2])
            body = self.manifests.get((name, parts[-1]))
            if body is None:
                return self.send(h, 404, b'{"errors":[{"code":"MANIFEST_UNKNOWN"}]}', "application/json")
            return self.send(h, 200, body, MANIFEST, {"Docker-Content-Digest": digest(body)})
        if len(parts) >= 5 and parts[1] == "v2" and parts[-2] == "blobs":
            if parts[-1] not in self.blobs:
                return self.send(h, 404, b'{"errors":[{"code":"BLOB_UNKNOWN"}]}', "application/json")
            if self.redirect:
                return self.send(h, 307, b"", headers={"Location": f"http://localhost:{self.port}/cdn/{parts[-1]}"})
            return self.send(h, 200, self.blobs[parts[-1]])
        return self.send(h, 404, b"")

    @staticmethod
    def send(h, status, body, kind="application/octet-stream", headers=None):
        h.send_response(status)
        h.send_header("Content-Type", kind)
        h.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            h.send_header(k, v)
        h.end_headers()
        h.wfile.write(body)


def push(base, name, tag, layer):
    """Push a feature to the registry at `base` (http://HOST:PORT) as an OCI artifact; its manifest digest."""
    body, config = manifest_for(layer)
    for blob in (layer, config):
        start = urllib.request.urlopen(urllib.request.Request(f"{base}/v2/{name}/blobs/uploads/", method="POST"),
                                       timeout=30)
        location = start.headers["Location"]
        location = location if location.startswith("http") else base + location
        sep = "&" if "?" in location else "?"
        urllib.request.urlopen(urllib.request.Request(f"{location}{sep}digest={digest(blob)}", data=blob,
                                                      method="PUT",
                                                      headers={"Content-Type": "application/octet-stream"}),
                               timeout=30)
    urllib.request.urlopen(urllib.request.Request(f"{base}/v2/{name}/manifests/{tag}", data=body, method="PUT",
                                                  headers={"Content-Type": MANIFEST}), timeout=30)
    return digest(body)


class MemoryRegistry:
    """The client side of a registry, in memory: stands in for host.registry.Registry (Fetcher._registry)."""

    def __init__(self):
        self.manifests, self.blobs, self.calls = {}, {}, []

    def publish(self, ref_base, tag, layer):
        """Publish a layer as REGISTRY/REPOSITORY:tag (`ref_base` without the tag); its manifest digest."""
        body, config = manifest_for(layer)
        self.blobs[digest(layer)] = layer
        self.blobs[digest(config)] = config
        self.manifests[(ref_base, tag)] = self.manifests[(ref_base, digest(body))] = body
        return digest(body)

    def client(self, registry):
        memory = self

        class Client:
            def manifest(self, repository, reference):
                memory.calls.append(("manifest", f"{registry}/{repository}", reference))
                body = memory.manifests.get((f"{registry}/{repository}", reference))
                if body is None:
                    from agentsh.host.registry import RegistryError

                    raise RegistryError("missing", f"registry {registry} has no such manifest (HTTP 404)",
                                        "check the feature's name and version")
                return body, MANIFEST, digest(body)

            def blob(self, repository, blob_digest, limit):
                memory.calls.append(("blob", f"{registry}/{repository}", blob_digest))
                return memory.blobs[blob_digest]

        return Client()

    def install(self, monkeypatch):
        """Make every Fetcher ask this registry instead of the network."""
        from agentsh.policy import devcontainer_oci

        def registry(fetcher, ref):
            if not fetcher.network:
                raise devcontainer_oci.AgentshError("not fetched yet", "run 'ab-up'")
            return self.client(ref.registry)

        monkeypatch.setattr(devcontainer_oci.Fetcher, "_registry", registry)
        return self
