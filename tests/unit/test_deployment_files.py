"""The deployment files cannot be built here (no Docker engine, no GPU), so their shape is checked:
the Dockerfile copies only what exists, pins its images and keeps torch out of the serving image;
the compose file wires triton and gateway; the plan builder rewrites a repository correctly."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with comments dropped and continuation lines joined."""
    out, pending = [], ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):  # a comment inside a continued instruction
            continue
        pending = f"{pending} {line}" if pending else line
        if pending.endswith("\\"):
            pending = pending[:-1].rstrip()
            continue
        keyword, _, rest = pending.partition(" ")
        out.append((keyword.upper(), rest.strip()))
        pending = ""
    assert not pending, "a continuation line runs off the end of the Dockerfile"
    return out


def stages(instructions) -> list[dict]:
    """One dict per FROM: its image, name and instructions."""
    result, args = [], {}
    for keyword, rest in instructions:
        if keyword == "ARG" and not result:
            name, _, default = rest.partition("=")
            args[name] = default
        elif keyword == "FROM":
            words = rest.split()
            image = re.sub(r"\$\{(\w+)\}", lambda m: args.get(m.group(1), m.group(0)), words[0])
            name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else None
            result.append({"image": image, "name": name, "body": []})
        else:
            result[-1]["body"].append((keyword, rest))
    return result


def copy_sources(rest: str) -> tuple[dict[str, str], list[str], str]:
    """COPY/ADD arguments -> (flags, sources, destination); shell and JSON forms."""
    words = json.loads(rest) if rest.startswith("[") else shlex.split(rest)
    flags = {}
    while words and words[0].startswith("--"):
        key, _, value = words.pop(0)[2:].partition("=")
        flags[key] = value
    return flags, words[:-1], words[-1]


def ignored(source: str) -> bool:
    patterns = [p.strip() for p in (ROOT / "Dockerfile.dockerignore").read_text().splitlines()
                if p.strip() and not p.startswith("#")]
    first = Path(source).parts[0]
    return any(first == p or source == p for p in patterns)


@pytest.fixture(scope="module")
def dockerfile():
    return stages(dockerfile_instructions(ROOT / "Dockerfile"))


def test_every_copy_source_exists_and_is_in_the_build_context(dockerfile):
    names = {s["name"] for s in dockerfile if s["name"]}
    copies = 0
    for stage in dockerfile:
        for keyword, rest in stage["body"]:
            if keyword not in ("COPY", "ADD"):
                continue
            flags, sources, _ = copy_sources(rest)
            if "from" in flags:  # another stage (or a named build context that replaces one)
                assert flags["from"] in names, f"COPY --from={flags['from']}: no such stage"
                continue
            for source in sources:
                copies += 1
                assert (ROOT / source).exists(), f"{keyword} {source}: not in the repository"
                assert not ignored(source), f"{keyword} {source}: excluded by Dockerfile.dockerignore"
    assert copies >= 5


def test_images_are_pinned_and_the_runtime_is_triton(dockerfile):
    external = [s["image"] for s in dockerfile if s["image"] not in {x["name"] for x in dockerfile} | {"scratch"}]
    for image in external:
        assert re.search(r":[\w.-]+$", image) and not image.endswith(":latest"), f"unpinned image {image}"
    runtime = dockerfile[-1]
    assert runtime["image"].startswith("nvcr.io/nvidia/tritonserver:") and runtime["image"].endswith("-py3")


def test_serving_image_has_no_torch_and_starts_through_the_entrypoint(dockerfile):
    runtime = dockerfile[-1]
    runs = " ".join(rest for keyword, rest in runtime["body"] if keyword == "RUN")
    assert ".[serve]" in runs and "[train]" not in runs and "torch==" not in runs
    assert "find_spec('torch') is None" in runs
    builder = " ".join(rest for s in dockerfile for keyword, rest in s["body"] if keyword == "RUN")
    assert "whl/cpu" in builder and "torch.version.cuda is None" in builder  # never a CUDA torch in the builder

    entrypoint = dict(runtime["body"])["ENTRYPOINT"]
    path = json.loads(entrypoint)[0]
    workdir = dict(runtime["body"])["WORKDIR"]
    relative = Path(path).relative_to(workdir)
    assert (ROOT / relative).is_file() and os.access(ROOT / relative, os.X_OK), f"{relative} must be executable"
    subprocess.run(["bash", "-n", str(ROOT / relative)], check=True)
    exposed = " ".join(rest for keyword, rest in runtime["body"] if keyword == "EXPOSE").split()
    assert {"8001", "8080"} <= set(exposed)


def test_compose_runs_triton_on_a_gpu_and_the_gateway_after_it():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert set(services) >= {"triton", "gateway"}
    triton, gateway = services["triton"], services["gateway"]

    devices = triton["deploy"]["resources"]["reservations"]["devices"]
    assert any("gpu" in d.get("capabilities", []) for d in devices)
    assert any(str(p).endswith(":8001") for p in triton["ports"])
    assert any(str(p).endswith(":8080") for p in gateway["ports"])

    depends = gateway["depends_on"]
    assert "triton" in depends
    if isinstance(depends, dict):
        assert depends["triton"]["condition"] == "service_healthy"
    assert "healthcheck" in triton

    # One volume holds the model repository for both.
    volume = lambda service: {str(v).split(":")[0] for v in service["volumes"]}  # noqa: E731
    shared = volume(triton) & volume(gateway)
    assert shared and shared <= set(compose["volumes"])
    assert gateway["environment"]["F2F_TRITON_URL"] == "triton:8001"
    assert triton["command"] == ["triton"] and gateway["command"] == ["gateway"]


def _load_build_plans():
    spec = importlib.util.spec_from_file_location("build_plans", ROOT / "docker" / "build_plans.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve their annotations through it
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def onnx_repository(tmp_path) -> Path:
    """A repository as `f2f export` writes it (configs from export's own writer), placeholder ONNX."""
    from engines.repository import ONNX_PLATFORM
    from export.model_repository import BatchingConfig, network_config, write_config, write_ensemble
    from f2f.avatar_spec import NETWORKS, AvatarSpec

    spec = AvatarSpec(crop_size=48, guest_feature_dim=16, frame_size=64)
    repo = tmp_path / "onnx"
    for network in NETWORKS:
        write_config(repo / network, network_config(spec, network, ONNX_PLATFORM, BatchingConfig(), 1))
        (repo / network / "1").mkdir()
        (repo / network / "1" / "model.onnx").write_bytes(b"placeholder " + network.encode())
    write_ensemble(repo, spec, BatchingConfig(), 1)
    return repo


def test_plan_builder_rewrites_configs_and_shapes(onnx_repository, tmp_path, capsys):
    from engines.repository import read_config

    build_plans = _load_build_plans()
    out = tmp_path / "triton"
    assert build_plans.main(["--onnx-repository", str(onnx_repository), "--out", str(out),
                             "--mode", "tensorrt", "--dry-run"]) == 0
    commands = [line for line in capsys.readouterr().out.splitlines() if "--onnx=" in line]
    assert len(commands) == 3
    for network in ("guest_encoder", "motion_generator", "renderer"):
        before, after = read_config(onnx_repository / network), read_config(out / network)
        assert after.platform == "tensorrt_plan" and after.default_model_filename == "model.plan"
        assert list(after.input) == list(before.input) and list(after.output) == list(before.output)
        assert after.parameters == before.parameters and after.dynamic_batching == before.dynamic_batching
        assert (out / network / "1").is_dir()
    assert read_config(out / "avatar_step") == read_config(onnx_repository / "avatar_step")
    renderer = next(c for c in commands if "renderer" in c)
    assert "--minShapes=motion:1x1x15" in renderer and "--maxShapes=motion:64x1x15" in renderer
    assert "--optShapes=motion:8x1x15" in renderer and "--fp16" in renderer


def test_plan_builder_onnx_mode_copies_models_and_caches(onnx_repository, tmp_path, capsys):
    build_plans = _load_build_plans()
    out = tmp_path / "triton"
    args = ["--onnx-repository", str(onnx_repository), "--out", str(out), "--mode", "onnx"]
    assert build_plans.main(args) == 0
    assert (out / "renderer" / "1" / "model.onnx").read_bytes() == b"placeholder renderer"
    assert (out / build_plans.STAMP).is_file()
    capsys.readouterr()
    assert build_plans.main(args) == 0
    assert "up to date" in capsys.readouterr().out
    (onnx_repository / "renderer" / "1" / "model.onnx").write_bytes(b"changed")
    assert build_plans.main(args) == 0
    assert (out / "renderer" / "1" / "model.onnx").read_bytes() == b"changed"


def test_make_serve_exports_with_the_flags_the_benchmarks_reuse():
    # The benchmarks reuse build/model_repository only when its stamp is that of the same export.
    from export.stamp import SERVE_EXPORT_FLAGS

    script = (ROOT / "scripts" / "serve.sh").read_text()
    assert f"flags=({' '.join(SERVE_EXPORT_FLAGS)})" in script
