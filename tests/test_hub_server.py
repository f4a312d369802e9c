"""The local hub server (`tests/hub_server.py`) driven over HTTP by the real clients, each in a child process whose
`HF_ENDPOINT` points at it: huggingface_hub's repo, upload, listing and download calls; transformers'
`push_to_hub` -> `from_pretrained`; `hf-rgbd finetune --push_to_hub`; and the server run as a process of its own."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import sysconfig
import textwrap
import time
from pathlib import Path
from typing import Any

from hub_server import COMMIT_SHA, HubStorage, LocalHubServer

TOKEN = "hf_dummy"


def client_env(endpoint: str, hf_home: Path) -> dict[str, str]:
    """The environment of a child process using the hub at `endpoint` with a fresh cache in `hf_home` (any HF_*
    setting of this process, HF_HUB_OFFLINE included, left out; no proxy for the local server)."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(("HF_", "HUGGINGFACE_"))}
    env.update(
        HF_ENDPOINT=endpoint, HF_TOKEN=TOKEN, HF_HOME=str(hf_home), HF_HUB_DISABLE_TELEMETRY="1",
        HF_HUB_DISABLE_PROGRESS_BARS="1", NO_PROXY="127.0.0.1", no_proxy="127.0.0.1", OMP_NUM_THREADS="1",
    )  # fmt: skip
    return env


# what every client script starts with: its `args`, and `failure(call)`
PRELUDE = """
    import json, sys
    from pathlib import Path
    args = json.loads(sys.argv[1])

    def failure(call):
        # [exception class, HTTP status or None] of `call()`; None when it succeeds
        try:
            call()
        except Exception as error:
            response = getattr(error, "response", None)
            return [type(error).__name__, None if response is None else response.status_code]
"""


def run_client(endpoint: str, hf_home: Path, script: str, **arguments: Any) -> Any:
    """Run `PRELUDE` + `script` in a child Python using the hub at `endpoint` (`arguments` as the JSON
    `sys.argv[1]`); returns the JSON it prints on its last line. (An endpoint the server lacks shows in the child's
    error: the server's 404 message names it.)"""
    code = textwrap.dedent(PRELUDE) + textwrap.dedent(script)
    result = subprocess.run(
        [sys.executable, "-c", code, json.dumps(arguments)], env=client_env(endpoint, hf_home), cwd=hf_home.parent,
        capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def served(server: LocalHubServer, method: str, path: str) -> int:
    """How many `method path` requests `server` has served."""
    return server.requests.count((method, path))


def write_folder(folder: Path) -> dict[str, bytes]:
    """A text file, a ~12 MB binary file of random bytes and nested files under `folder`; returns `{path: bytes}`."""
    files = {
        "notes.txt": b"first version\n",
        "big.bin": random.Random(0).randbytes(12 * 2**20),
        "sub/extra.txt": b"extra file\n",
        "sub/nested/deep.txt": b"deep file\n",
    }
    for path, content in files.items():
        (folder / path).parent.mkdir(parents=True, exist_ok=True)
        (folder / path).write_bytes(content)
    return files


# ------------------------------------------------------------------------------------------------ huggingface_hub
UPLOAD = """
    from huggingface_hub import HfApi
    api, repo = HfApi(), args["repo"]
    url = api.create_repo(repo)
    again = [str(api.create_repo(repo, exist_ok=True)) for _ in range(2)]
    commit = api.upload_folder(repo_id=repo, folder_path=args["folder"], commit_message="first")
    print(json.dumps({
        "url": str(url), "again": again, "oid": commit.oid, "commit_url": commit.commit_url,
        "conflict": failure(lambda: api.create_repo(repo)),
        "anonymous_create": failure(lambda: api.create_repo("test-user/anonymous", token=False)),
        "user": api.whoami()["name"], "files": api.list_repo_files(repo), "sha": api.model_info(repo).sha,
        "sizes": {file.rfilename: file.size for file in api.model_info(repo, files_metadata=True).siblings},
    }))
"""

READ = """
    from huggingface_hub import HfApi, file_exists, hf_hub_download, snapshot_download
    repo = args["repo"]
    unchanged = HfApi().upload_folder(repo_id=repo, folder_path=args["folder"], commit_message="nothing new")
    first = hf_hub_download(repo, "big.bin")
    second = hf_hub_download(repo, "big.bin")
    snapshot = Path(snapshot_download(repo))
    print(json.dumps({
        "unchanged_oid": unchanged.oid, "first": first, "second": second,
        "snapshot": {path.relative_to(snapshot).as_posix(): str(path) for path in snapshot.rglob("*") if path.is_file()},
        "plain_name": Path(hf_hub_download(repo.split("/")[1], "notes.txt")).read_text(),
        "exists": [
            file_exists(repo, "notes.txt"), file_exists(repo, "missing.txt"), file_exists("test-user/none", "notes.txt"),
        ],
        "errors": {
            "entry": failure(lambda: hf_hub_download(repo, "missing.txt")),
            "repo": failure(lambda: hf_hub_download("test-user/none", "notes.txt")),
            "revision": failure(lambda: hf_hub_download(repo, "notes.txt", revision="0" * 40)),
        },
    }))
"""

SECOND_COMMIT = """
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi, hf_hub_download
    repo, first = args["repo"], args["first"]
    api = HfApi()
    operations = [CommitOperationAdd("notes.txt", b"second version\\n"), CommitOperationDelete("sub/nested/deep.txt")]
    commit = api.create_commit(repo, operations, commit_message="second", parent_commit=first)
    late = [CommitOperationAdd("late.txt", b"late")]
    stale_parent = failure(lambda: api.create_commit(repo, late, commit_message="late", parent_commit=first))
    deleted = failure(lambda: hf_hub_download(repo, "sub/nested/deep.txt"))
    folder_commit = api.delete_folder("sub", repo_id=repo)
    print(json.dumps({
        "oid": commit.oid, "folder_oid": folder_commit.oid, "sha": api.model_info(repo).sha,
        "stale_parent": stale_parent, "deleted": deleted,
        "missing_folder": failure(lambda: api.delete_folder("sub", repo_id=repo)),
        "notes_now": Path(hf_hub_download(repo, "notes.txt")).read_text(),
        "notes_then": Path(hf_hub_download(repo, "notes.txt", revision=first)).read_text(),
        "deep_then": Path(hf_hub_download(repo, "sub/nested/deep.txt", revision=first)).read_text(),
        "files_now": api.list_repo_files(repo), "files_then": api.list_repo_files(repo, revision=first),
        "root_then": [entry.path for entry in api.list_repo_tree(repo, revision=first)],
        "sha_then": api.model_info(repo, revision=first).sha,
    }))
"""


def test_huggingface_hub_uploads_lists_downloads_and_keeps_every_commit(tmp_path):
    repo = "test-user/hub-roundtrip"
    folder = tmp_path / "folder"
    files = write_folder(folder)
    with LocalHubServer(tmp_path / "hub", tree_page_size=2) as server:
        uploaded = run_client(server.endpoint, tmp_path / "cache", UPLOAD, repo=repo, folder=str(folder))
        url = f"{server.endpoint}/{repo}"
        assert uploaded["url"] == url and uploaded["again"] == [url, url]
        assert uploaded["conflict"] == ["HfHubHTTPError", 409]
        assert uploaded["anonymous_create"] == ["HfHubHTTPError", 401] and uploaded["user"] == "test-user"
        first = uploaded["oid"]
        assert (
            COMMIT_SHA.fullmatch(first)
            and uploaded["sha"] == first
            and uploaded["commit_url"] == f"{url}/commit/{first}"
        )
        assert uploaded["files"] == [".gitattributes", *sorted(files)]
        stored = server.repo_files(repo)
        assert {path: stored[path] for path in files} == files  # the 12 MB file arrived inline, byte-identical
        assert uploaded["sizes"] == {path: len(content) for path, content in stored.items()}
        # inline only, with no LFS or Xet call; 7 tree entries (5 files, 2 folders) in pages of 2
        assert served(server, "POST", f"/api/models/{repo}/preupload/main") == 1
        assert served(server, "GET", f"/api/models/{repo}/tree/main") == 4

        server.requests.clear()
        read = run_client(server.endpoint, tmp_path / "cache", READ, repo=repo, folder=str(folder))
        assert read["unchanged_oid"] == first and served(server, "POST", f"/api/models/{repo}/commit/main") == 0
        assert read["first"] == read["second"] and Path(read["first"]).read_bytes() == files["big.bin"]
        # the second download and the snapshot's came from the cache: one GET of the file in all
        assert served(server, "GET", f"/{repo}/resolve/main/big.bin") == 1
        assert served(server, "GET", f"/{repo}/resolve/{first}/big.bin") == 0
        assert {path: Path(file).read_bytes() for path, file in read["snapshot"].items()} == stored
        # a plain name is redirected to the test user's repo: the client downloads from where it was sent
        assert read["plain_name"] == "first version\n"
        assert served(server, "HEAD", "/hub-roundtrip/resolve/main/notes.txt") == 1
        assert served(server, "GET", f"/{repo}/resolve/main/notes.txt") == 1
        assert read["exists"] == [True, False, False]
        assert read["errors"] == {
            "entry": ["RemoteEntryNotFoundError", 404],
            "repo": ["RepositoryNotFoundError", 404],
            "revision": ["RevisionNotFoundError", 404],
        }

        second = run_client(server.endpoint, tmp_path / "cache", SECOND_COMMIT, repo=repo, first=first)
        assert all(COMMIT_SHA.fullmatch(second[key]) for key in ("oid", "folder_oid"))
        assert len({first, second["oid"], second["folder_oid"]}) == 3 and second["sha"] == second["folder_oid"]
        assert second["stale_parent"] == ["HfHubHTTPError", 412]
        assert second["deleted"] == second["missing_folder"] == ["RemoteEntryNotFoundError", 404]
        assert second["notes_now"] == "second version\n" and second["notes_then"] == "first version\n"
        assert second["deep_then"] == "deep file\n" and second["sha_then"] == first
        assert second["files_now"] == [".gitattributes", "big.bin", "notes.txt"]
        assert second["files_then"] == uploaded["files"]
        assert second["root_then"] == [".gitattributes", "big.bin", "notes.txt", "sub"]
        kept = {path: content for path, content in stored.items() if not path.startswith("sub/")}
        assert server.repo_files(repo) == {**kept, "notes.txt": b"second version\n"}
        assert not server.unhandled


def test_unknown_endpoints_answer_a_json_404_and_are_recorded(tmp_path):
    script = """
        from huggingface_hub import HfApi
        from huggingface_hub.errors import HfHubHTTPError
        try:
            HfApi().list_repo_refs("test-user/anything")
        except HfHubHTTPError as error:
            print(json.dumps({"status": error.response.status_code, "error": error.response.json()["error"]}))
    """
    with LocalHubServer(tmp_path / "hub") as server:
        answer = run_client(server.endpoint, tmp_path / "cache", script)
        assert answer == {
            "status": 404,
            "error": "hub test server: no endpoint for GET /api/models/test-user/anything/refs",
        }
        assert server.unhandled == ["no endpoint for GET /api/models/test-user/anything/refs"]


def test_the_server_runs_as_a_process_of_its_own(tmp_path):
    port_file = tmp_path / "endpoint"
    process = subprocess.Popen(
        [sys.executable, str(Path(__file__).with_name("hub_server.py")), str(tmp_path / "hub"), "--port-file", str(port_file)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while not port_file.exists():
            assert process.poll() is None and time.monotonic() < deadline, "the server never wrote its endpoint"
            time.sleep(0.05)
        script = """
            from huggingface_hub import HfApi, hf_hub_download
            api = HfApi()
            repo = api.create_repo("elsewhere").repo_id
            api.upload_file(path_or_fileobj=b"from another process", path_in_repo="a.txt", repo_id=repo)
            print(json.dumps({"repo": repo, "file": Path(hf_hub_download(repo, "a.txt")).read_text()}))
        """
        answer = run_client(port_file.read_text(), tmp_path / "cache", script)
        assert answer == {"repo": "test-user/elsewhere", "file": "from another process"}
    finally:
        process.terminate()
        log = process.communicate(timeout=30)[0]
    assert process.returncode == 0, log
    assert HubStorage(tmp_path / "hub").repo_files("test-user/elsewhere")["a.txt"] == b"from another process"


# ------------------------------------------------------------------------------------------------ transformers
PUSH_BERT = """
    import torch
    from transformers import BertConfig, BertModel
    torch.manual_seed(0)
    config = BertConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32, vocab_size=50)
    model = BertModel(config).eval()
    commit = model.push_to_hub("test-user/tiny")
    with torch.no_grad():
        hidden = model(torch.arange(10).reshape(2, 5)).last_hidden_state
    print(json.dumps({"commit": commit.oid, "hidden": hidden.tolist()}))
"""

LOAD_BERT = """
    import torch
    from transformers import BertModel
    model = BertModel.from_pretrained("test-user/tiny").eval()
    with torch.no_grad():
        hidden = model(torch.arange(10).reshape(2, 5)).last_hidden_state
    print(json.dumps({"hidden": hidden.tolist()}))
"""


def test_transformers_push_to_hub_then_from_pretrained_in_a_fresh_process(tmp_path):
    with LocalHubServer(tmp_path / "hub") as server:
        pushed = run_client(server.endpoint, tmp_path / "push-cache", PUSH_BERT)
        stored = server.repo_files("test-user/tiny")
        assert {".gitattributes", "config.json", "model.safetensors", "README.md"} <= stored.keys()
        assert json.loads(stored["config.json"])["hidden_size"] == 16
        loaded = run_client(server.endpoint, tmp_path / "load-cache", LOAD_BERT)
        assert loaded["hidden"] == pushed["hidden"]  # exactly: the same weights
        # it loaded the commit that was pushed
        assert served(server, "GET", f"/test-user/tiny/resolve/{pushed['commit']}/model.safetensors") == 1
        assert not server.unhandled


# ------------------------------------------------------------------------------------------------ hf-rgbd finetune
LOAD_FINETUNED = """
    import hf_rgbd  # registers the RGB-D classes with the Auto classes
    import torch
    from transformers import AutoModelForImageClassification, AutoProcessor
    from hf_rgbd.data import make_synthetic_rgbd, split_to_tensors
    local = args["local"]
    processor = AutoProcessor.from_pretrained("test-user/finetuned")
    local_processor = AutoProcessor.from_pretrained(local)
    inputs, _ = split_to_tensors(make_synthetic_rgbd(4, 1, 1, image_size=32, seed=1)["train"], processor)
    with torch.no_grad():
        logits = AutoModelForImageClassification.from_pretrained("test-user/finetuned").eval()(**inputs).logits
        local_logits = AutoModelForImageClassification.from_pretrained(local).eval()(**inputs).logits
    print(json.dumps({
        "processor": type(processor).__name__, "same_processor": processor.to_dict() == local_processor.to_dict(),
        "logits": logits.tolist(), "local_logits": local_logits.tolist(),
    }))
"""


def test_hf_rgbd_finetune_pushes_a_model_that_loads_back_from_the_hub(tmp_path):
    output_dir = tmp_path / "finetuned"
    command = [
        str(Path(sysconfig.get_path("scripts")) / "hf-rgbd"), "finetune", "--model_name_or_path", "rgbd_cnn:small",
        "--dataset", "synthetic", "--synthetic_num_train", "24", "--synthetic_num_validation", "10",
        "--synthetic_num_test", "6", "--synthetic_image_size", "32", "--num_train_epochs", "1",
        "--per_device_train_batch_size", "8", "--disable_tqdm", "True", "--seed", "0", "--output_dir", str(output_dir),
        "--push_to_hub", "True", "--hub_model_id", "test-user/finetuned", "--hub_token", TOKEN,
    ]  # fmt: skip
    with LocalHubServer(tmp_path / "hub") as server:
        result = subprocess.run(command, env=client_env(server.endpoint, tmp_path / "train-cache"), cwd=tmp_path,
                                capture_output=True, text=True, timeout=300)  # fmt: skip
        assert result.returncode == 0, result.stderr[-4000:]
        stored = server.repo_files("test-user/finetuned")
        for name in ("config.json", "model.safetensors", "processor_config.json", "README.md"):
            assert stored[name] == (output_dir / name).read_bytes(), name
        assert "hf-rgbd" in stored["README.md"].decode() and not any(name.startswith("checkpoint-") for name in stored)
        # every card pushed on the way is complete: named after the repo, trained from scratch, the RGB-D section
        for commit in server.storage.commits("test-user/finetuned"):
            if "README.md" in commit["tree"]:
                card = server.storage.read_blob("test-user/finetuned", commit["tree"]["README.md"]).decode()
                assert "# finetuned" in card and "trained from scratch" in card, commit["title"]
                assert "## RGB-D model (hf-rgbd)" in card and "fine-tuned version of []" not in card

        loaded = run_client(server.endpoint, tmp_path / "load-cache", LOAD_FINETUNED, local=str(output_dir))
        assert loaded["processor"] == "RgbdProcessor" and loaded["same_processor"]
        assert loaded["logits"] == loaded["local_logits"]
        assert not server.unhandled
