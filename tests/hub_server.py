"""A Hugging Face Hub-compatible HTTP server for tests, on the standard library only.

`huggingface_hub` (and through it transformers' `push_to_hub` / `from_pretrained` and `Trainer.push_to_hub`) talks
to it over real HTTP once `HF_ENDPOINT` points at it, so push -> load round trips run offline:

    with LocalHubServer(tmp_path / "hub") as server:
        ...  # a child process with HF_ENDPOINT=server.endpoint, HF_TOKEN=hf_dummy pushes and downloads
        assert server.repo_files("test-user/tiny")["config.json"] == ...
        assert not server.unhandled

or as a process of its own, serving until killed: `python tests/hub_server.py ROOT --port-file FILE`.

Model repos only, one branch (`main`) plus every commit sha as a revision. Every file is committed inline: the
preupload answer is `"regular"` for all files, so the client never starts an LFS or Xet transfer (it only tries Xet
for files the preupload calls `"lfs"`, and downloads through Xet only when a resolve answer has an `X-Xet-Hash`
header, which this server never sends). Any other endpoint answers 404 with a JSON error and is recorded in
`unhandled`, so a failing test names what the client wanted.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import logging
import os
import re
import shutil
import signal
import sys
import threading
from collections.abc import Callable
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit

logger = logging.getLogger(__name__)

USER = "test-user"
MAIN = "main"
COMMIT_SHA = re.compile(r"[0-9a-f]{40}")
REPO_PART = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
# what the hub commits to a new repo: its `.gitattributes` (an abridged one here)
INITIAL_GITATTRIBUTES = (
    b"*.bin filter=lfs diff=lfs merge=lfs -text\n*.safetensors filter=lfs diff=lfs merge=lfs -text\n"
)
BAD_CREDENTIALS = "Invalid credentials in Authorization header"


class HubError(Exception):
    """An error answer: HTTP status, message and the hub's `X-Error-Code` (which the client maps to its errors)."""

    def __init__(
        self, status: int, message: str, error_code: str | None = None, headers: dict[str, str] | None = None
    ):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = {**({"X-Error-Code": error_code} if error_code else {}), **(headers or {})}


def git_blob_oid(content: bytes) -> str:
    """The git blob id of `content` (what the hub calls a regular file's `oid` and sends as its `ETag`)."""
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


def canonical_repo_id(repo_id: str) -> str:
    """`namespace/name`, a plain `name` being the test user's."""
    return repo_id if "/" in repo_id else f"{USER}/{repo_id}"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _checked_repo_path(path: str) -> str:
    parts = PurePosixPath(path).parts
    if not path or path.startswith("/") or "\\" in path or any(part in (".", "..") for part in parts):
        raise HubError(400, f"invalid path in repo: {path!r}")
    return path


class HubStorage:
    """Model repos on disk. `ROOT/NAMESPACE/NAME/` holds `files/` (the files of the latest commit), `blobs/` (every
    committed content, named by git blob id) and `commits.json` (the history, oldest first; each commit with its
    tree, `{path: blob id}`). Writes are serialised by a lock; readers see `commits.json` replaced atomically."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self._lock = threading.Lock()

    def repo_dir(self, repo_id: str) -> Path:
        namespace, _, name = canonical_repo_id(repo_id).partition("/")
        if not (REPO_PART.fullmatch(namespace) and REPO_PART.fullmatch(name)):
            raise HubError(400, f"invalid repo id: {repo_id!r}")
        return self.root / namespace / name

    def exists(self, repo_id: str) -> bool:
        return (self.repo_dir(repo_id) / "commits.json").is_file()

    def commits(self, repo_id: str) -> list[dict[str, Any]]:
        """The history of `repo_id`, oldest first (404 `RepoNotFound` when there is no such repo)."""
        if not self.exists(repo_id):
            raise HubError(404, "Repository not found", "RepoNotFound")
        return json.loads((self.repo_dir(repo_id) / "commits.json").read_text())

    def resolve(self, repo_id: str, revision: str) -> dict[str, Any]:
        """The commit `revision` (`main` or a commit sha) names (404 `RevisionNotFound` for any other)."""
        commits = self.commits(repo_id)
        if revision == MAIN:
            return commits[-1]
        if COMMIT_SHA.fullmatch(revision):
            for commit in commits:
                if commit["oid"] == revision:
                    return commit
        raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")

    def read_blob(self, repo_id: str, oid: str) -> bytes:
        return (self.repo_dir(repo_id) / "blobs" / oid).read_bytes()

    def blob_size(self, repo_id: str, oid: str) -> int:
        return (self.repo_dir(repo_id) / "blobs" / oid).stat().st_size

    def create(self, repo_id: str) -> bool:
        """Create `repo_id` with the hub's initial commit; False when it already exists."""
        with self._lock:
            if self.exists(repo_id):
                return False
            oid = git_blob_oid(INITIAL_GITATTRIBUTES)
            self._write_commit(
                repo_id, [], "initial commit", "", {".gitattributes": oid}, {oid: INITIAL_GITATTRIBUTES}
            )
            return True

    def commit(
        self, repo_id: str, revision: str, header: dict[str, Any], operations: list[tuple[str, str, bytes | None]]
    ) -> dict[str, Any]:
        """Apply `operations` (`("file", path, content)`, `("deletedFile", path, None)`, `("deletedFolder", path,
        None)`, in order) on top of `revision`'s head, as a new commit; returns it."""
        if revision != MAIN:
            raise HubError(
                404, f"Invalid rev id: {revision} (this server's only branch is {MAIN})", "RevisionNotFound"
            )
        with self._lock:
            commits = self.commits(repo_id)
            head = commits[-1]
            parent = header.get("parentCommit")
            if parent is not None and not head["oid"].startswith(parent):
                raise HubError(412, f"parentCommit {parent} is not the head of {MAIN} ({head['oid']})")
            tree = dict(head["tree"])
            blobs: dict[str, bytes] = {}
            for kind, path, content in operations:
                if kind == "file":
                    tree[path] = git_blob_oid(content)
                    blobs[tree[path]] = content
                elif kind == "deletedFile":
                    if tree.pop(path, None) is None:
                        raise HubError(404, f"A file with this name doesn't exist: {path}", "EntryNotFound")
                else:
                    prefix = path.rstrip("/") + "/"
                    inside = [name for name in tree if name.startswith(prefix)]
                    if not inside:
                        raise HubError(404, f"A folder with this name doesn't exist: {path}", "EntryNotFound")
                    for name in inside:
                        del tree[name]
            return self._write_commit(
                repo_id, commits, header.get("summary", ""), header.get("description", ""), tree, blobs
            )

    def _write_commit(
        self,
        repo_id: str,
        commits: list[dict[str, Any]],
        title: str,
        description: str,
        tree: dict[str, str],
        blobs: dict[str, bytes],
    ) -> dict[str, Any]:
        """Store `blobs` (`{oid: content}`, the new contents of `tree`), then the commit of `tree` on `commits`."""
        repo = self.repo_dir(repo_id)
        (repo / "blobs").mkdir(parents=True, exist_ok=True)
        for oid, content in blobs.items():
            (repo / "blobs" / oid).write_bytes(content)
        date = _now()
        parent = commits[-1]["oid"] if commits else None
        identity = json.dumps([repo_id, parent, tree, title, description, date], sort_keys=True)
        commit = {
            "oid": hashlib.sha1(identity.encode()).hexdigest(),
            "parent": parent,
            "title": title,
            "description": description,
            "date": date,
            "tree": dict(sorted(tree.items())),
        }
        self._write_files(repo, commit["tree"])
        staged = repo / "commits.json.tmp"
        staged.write_text(json.dumps([*commits, commit], indent=1))
        os.replace(staged, repo / "commits.json")
        return commit

    @staticmethod
    def _write_files(repo: Path, tree: dict[str, str]) -> None:
        staged = repo / "files.tmp"
        shutil.rmtree(staged, ignore_errors=True)
        for path, oid in tree.items():
            target = staged / path
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(repo / "blobs" / oid, target)
        staged.mkdir(exist_ok=True)  # a commit that deletes every file
        shutil.rmtree(repo / "files", ignore_errors=True)
        staged.rename(repo / "files")

    def repo_files(self, repo_id: str) -> dict[str, bytes]:
        """`{path: content}` of the latest commit of `repo_id`."""
        files = self.repo_dir(repo_id) / "files"
        return {
            file.relative_to(files).as_posix(): file.read_bytes()
            for file in sorted(files.rglob("*"))
            if file.is_file()
        }


def tree_entries(storage: HubStorage, repo_id: str, tree: dict[str, str], folder: str, recursive: bool) -> list[dict]:
    """The tree listing of `folder` ("" for the root) as the hub's tree API gives it: files and directories (with
    their subtree when `recursive`), sorted by path; 404 `EntryNotFound` for a folder the tree does not have."""
    prefix = folder.rstrip("/") + "/" if folder else ""
    inside = {path: oid for path, oid in tree.items() if path.startswith(prefix)}
    if folder and not inside:
        raise HubError(404, f"Entry not found: {folder}", "EntryNotFound")
    folders: set[str] = set()
    entries = []
    for path, oid in inside.items():
        parents = [str(parent) for parent in PurePosixPath(path[len(prefix) :]).parents][:-1]
        if not recursive and parents:
            folders.add(prefix + parents[-1])
            continue
        folders.update(prefix + parent for parent in parents)
        entries.append({"type": "file", "oid": oid, "size": storage.blob_size(repo_id, oid), "path": path})
    for name in folders:
        listing = sorted((path, oid) for path, oid in tree.items() if path.startswith(name + "/"))
        oid = hashlib.sha1(json.dumps(listing).encode()).hexdigest()
        entries.append({"type": "directory", "oid": oid, "size": 0, "path": name})
    return sorted(entries, key=lambda entry: entry["path"])


REPO = r"(?P<repo>[^/]+/[^/]+|[^/]+)"
Route = tuple[frozenset[str], re.Pattern[str], Callable[..., None]]


class HubRequestHandler(BaseHTTPRequestHandler):
    """Answers one connection's requests (HTTP/1.1 keep-alive) from the `LocalHubServer` of its server."""

    protocol_version = "HTTP/1.1"
    server: _HubHTTPServer
    routes: list[Route]

    @property
    def hub(self) -> LocalHubServer:
        return self.server.hub

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("%s " + format, self.address_string(), *args)

    def dispatch(self) -> None:
        url = urlsplit(self.path)
        self.hub.requests.append((self.command, url.path))
        try:
            body = self._read_body()
            for methods, pattern, handle in self.routes:
                if self.command in methods and (match := pattern.fullmatch(url.path)):
                    handle(self, match, dict(parse_qsl(url.query)), body)
                    return
            self._record_unhandled(f"no endpoint for {self.command} {url.path}")
            self._send_error(HubError(404, f"hub test server: no endpoint for {self.command} {url.path}"))
        except HubError as error:
            self._send_error(error)
        except Exception as error:  # a bug of this server: answer it, so that the client's error names it
            logger.exception("%s %s failed", self.command, url.path)
            self._record_unhandled(f"{self.command} {url.path} raised {error!r}")
            self._send_error(HubError(500, f"hub test server: {error!r}"))

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = dispatch

    def _record_unhandled(self, what: str) -> None:
        self.hub.unhandled.append(what)
        logger.warning("hub test server: %s", what)

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            self.close_connection = True
            raise HubError(411, "hub test server: send a Content-Length (chunked bodies are not read)")
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _send(self, status: int, body: bytes, content_type: str, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for key, value in {"Content-Type": content_type, "Content-Length": str(len(body)), **(headers or {})}.items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _send_json(self, payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(payload).encode(), "application/json; charset=utf-8", headers)

    def _send_error(self, error: HubError) -> None:
        # header values must be latin-1: the JSON body keeps the full message
        headers = {"X-Error-Message": error.message.encode("latin-1", "replace").decode("latin-1"), **error.headers}
        self._send_json({"error": error.message}, error.status, headers)

    def _require_token(self) -> None:
        authorization = self.headers.get("Authorization", "")
        if not authorization.startswith("Bearer ") or not authorization[len("Bearer ") :].strip():
            raise HubError(401, BAD_CREDENTIALS)

    # ------------------------------------------------------------------------------------------------ endpoints
    def whoami(self, match: re.Match, query: dict[str, str], body: bytes) -> None:
        self._require_token()
        self._send_json({
            "type": "user", "id": "0" * 24, "name": USER, "fullname": "Test User", "orgs": [],
            "auth": {"type": "access_token", "accessToken": {"displayName": "tests", "role": "write"}},
        })  # fmt: skip

    def create_repo(self, match: re.Match, query: dict[str, str], body: bytes) -> None:
        self._require_token()
        payload = json.loads(body)
        if payload.get("type", "model") != "model":
            raise HubError(400, f"this server holds model repos only, not {payload['type']!r}")
        repo_id = f"{payload.get('organization') or USER}/{payload['name']}"
        url = f"{self.hub.endpoint}/{repo_id}"
        if not self.hub.storage.create(repo_id):
            self._send_json({"error": "You already created this model repo", "url": url}, 409)
            return
        self._send_json({"url": url, "name": repo_id})

    def validate_yaml(self, match: re.Match, query: dict[str, str], body: bytes) -> None:
        """The hub parses a README's YAML metadata; this server (no YAML parser in the standard library) only checks
        that a `---` block that opens is closed."""
        lines = json.loads(body)["content"].splitlines()
        if lines and lines[0].strip() == "---" and "---" not in (line.strip() for line in lines[1:]):
            message = "the README.md metadata block opened by `---` is never closed"
            self._send_json({"errors": [{"message": message}], "warnings": []}, 400)
            return
        self._send_json({"errors": [], "warnings": []})

    def model_info(self, match: re.Match, query: dict[str, str], body: bytes) -> None:
        repo_id = canonical_repo_id(unquote(match["repo"]))
        commits = self.hub.storage.commits(repo_id)
        commit = self.hub.storage.resolve(repo_id, unquote(match["revision"] or MAIN))
        with_blobs = query.get("blobs", "").lower() == "true"
        siblings = [
            {
                "rfilename": path,
                **({"size": self.hub.storage.blob_size(repo_id, oid), "blobId": oid} if with_blobs else {}),
            }
            for path, oid in commit["tree"].items()
        ]
        self._send_json({
            "_id": commits[0]["oid"][:24], "id": repo_id, "modelId": repo_id, "author": repo_id.split("/")[0],
            "sha": commit["oid"], "lastModified": commit["date"], "createdAt": commits[0]["date"], "private": False,
            "disabled": False, "gated": False, "downloads": 0, "likes": 0, "tags": [], "siblings": siblings,
        })  # fmt: skip

    def preupload(self, match: re.Match, query: dict[str, str], body: bytes) -> None:
        self._require_token()
        repo_id = canonical_repo_id(unquote(match["repo"]))
        commit = self.hub.storage.resolve(repo_id, unquote(match["revision"]))
        files = [
            {
                "path": file["path"],
                "uploadMode": "regular",
                "shouldIgnore": False,
                "oid": commit["tree"].get(file["path"]),
            }
            for file in json.loads(body)["files"]
        ]
        self._send_json({"files": files, "commitOid": commit["oid"]})

    def commit(self, match: re.Match, query: dict[str, str], body: bytes) -> None:
        self._require_token()
        if query.get("create_pr"):
            raise HubError(400, "hub test server: pull requests are not supported")
        repo_id = canonical_repo_id(unquote(match["repo"]))
        lines = [json.loads(line) for line in body.splitlines() if line.strip()]
        if not lines or lines[0]["key"] != "header":
            raise HubError(400, "the commit payload must start with a header line")
        operations: list[tuple[str, str, bytes | None]] = []
        for line in lines[1:]:
            key, value = line["key"], line["value"]
            path = _checked_repo_path(value["path"])
            if key == "file" and value.get("encoding") == "base64":
                operations.append((key, path, base64.b64decode(value["content"])))
            elif key in ("deletedFile", "deletedFolder"):
                operations.append((key, path, None))
            else:  # an `lfsFile` would need an LFS / Xet upload, which the preupload answer rules out
                message = f"hub test server: unsupported commit operation {key!r} for {path} (inline base64 only)"
                raise HubError(400, message)
        oid = self.hub.storage.commit(repo_id, unquote(match["revision"]), lines[0]["value"], operations)["oid"]
        url = f"{self.hub.endpoint}/{repo_id}/commit/{oid}"
        self._send_json({"success": True, "commitOid": oid, "commitUrl": url, "hookOutput": ""})

    def tree(self, match: re.Match, query: dict[str, str], body: bytes) -> None:
        repo_id = canonical_repo_id(unquote(match["repo"]))
        commit = self.hub.storage.resolve(repo_id, unquote(match["revision"]))
        recursive = query.get("recursive", "").lower() == "true"
        entries = tree_entries(self.hub.storage, repo_id, commit["tree"], unquote(match["path"] or ""), recursive)
        start = int(query.get("cursor", 0))
        end = start + self.hub.tree_page_size
        headers = {}
        if end < len(entries):  # the hub's cursor pagination: a `Link` header to the next page
            next_page = urlencode({**query, "cursor": end})
            headers["Link"] = f'<{self.hub.endpoint}{urlsplit(self.path).path}?{next_page}>; rel="next"'
        self._send_json(entries[start:end], headers=headers)

    def resolve(self, match: re.Match, query: dict[str, str], body: bytes) -> None:
        repo_id = unquote(match["repo"])
        if "/" not in repo_id:  # as the hub does for a renamed repo: a relative redirect to its canonical id
            location = f"/{canonical_repo_id(repo_id)}/resolve/{match['revision']}/{match['path']}"
            self._send_json({"url": location}, 307, {"Location": location})
            return
        commit = self.hub.storage.resolve(repo_id, unquote(match["revision"]))
        oid = commit["tree"].get(unquote(match["path"]))
        commit_header = {"X-Repo-Commit": commit["oid"]}
        if oid is None:
            raise HubError(404, "Entry not found", "EntryNotFound", commit_header)
        content = self.hub.storage.read_blob(repo_id, oid)
        self._send(200, content, "application/octet-stream", {"ETag": f'"{oid}"', **commit_header})

    routes = [
        (frozenset({"GET"}), re.compile(r"/api/whoami-v2"), whoami),
        (frozenset({"POST"}), re.compile(r"/api/repos/create"), create_repo),
        (frozenset({"POST"}), re.compile(r"/api/validate-yaml"), validate_yaml),
        (frozenset({"GET"}), re.compile(rf"/api/models/{REPO}(?:/revision/(?P<revision>[^/]+))?"), model_info),
        (frozenset({"POST"}), re.compile(rf"/api/models/{REPO}/preupload/(?P<revision>[^/]+)"), preupload),
        (frozenset({"POST"}), re.compile(rf"/api/models/{REPO}/commit/(?P<revision>[^/]+)"), commit),
        (frozenset({"GET"}), re.compile(rf"/api/models/{REPO}/tree/(?P<revision>[^/]+)(?:/(?P<path>.+))?"), tree),
        (frozenset({"GET", "HEAD"}), re.compile(rf"/{REPO}/resolve/(?P<revision>[^/]+)/(?P<path>.+)"), resolve),
    ]


class _HubHTTPServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, hub: LocalHubServer):
        self.hub = hub
        super().__init__(("127.0.0.1", 0), HubRequestHandler)


class LocalHubServer:
    """A hub-compatible server on 127.0.0.1 (a free port), serving from a daemon thread while in its `with` block.

    `endpoint` is what `HF_ENDPOINT` should be; `requests` the `(method, path)` of every request served (path without
    query); `unhandled` what it could not answer (unknown endpoints, its own errors): a test should assert it stays
    empty. `tree_page_size` is the page size of the tree API (the hub's is 1000)."""

    def __init__(self, root: str | Path, tree_page_size: int = 1000):
        self.storage = HubStorage(root)
        self.tree_page_size = tree_page_size
        self.requests: list[tuple[str, str]] = []
        self.unhandled: list[str] = []
        self._httpd: _HubHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def endpoint(self) -> str:
        if self._httpd is None:
            raise RuntimeError("the server is not running: use it in a `with LocalHubServer(root) as server:` block")
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def repo_files(self, repo_id: str) -> dict[str, bytes]:
        """`{path: content}` of the latest commit of `repo_id`."""
        return self.storage.repo_files(repo_id)

    def __enter__(self) -> LocalHubServer:
        self._httpd = _HubHTTPServer(self)
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="local-hub-server", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join()
        self._httpd = self._thread = None


def main(argv: list[str] | None = None) -> None:
    """Serve ROOT until killed, after writing the endpoint to --port-file (atomically: a reader never sees half)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("root", type=Path, help="folder of the repos (each made when created)")
    parser.add_argument("--port-file", type=Path, required=True, help="file to write the endpoint URL to")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    with LocalHubServer(args.root) as server:
        staged = args.port_file.with_name(args.port_file.name + ".tmp")
        staged.write_text(server.endpoint)
        os.replace(staged, args.port_file)
        logger.info("serving %s at %s", args.root, server.endpoint)
        threading.Event().wait()


if __name__ == "__main__":
    main()
