"""`lab image build`: Dockerfiles of the article's shape, parsed, planned and built
over a lab image. No root, no containerd."""

from __future__ import annotations

import tarfile
from pathlib import Path

import pytest

from kubehoist.errors import KubehoistError
from kubehoist.image.archive import read_archive, write_oci_archive
from kubehoist.image.cache import Recipe
from kubehoist.image.config import ImageConfig
from kubehoist.image.layers import Tree, directory, file_data, gzip_layer, symlink, write_layer
from kubehoist.lab import dockerfile, images
from tests.unit.imagefiles import layer_file, layer_members, open_archive, sha256

KCM = "registry.k8s.io/kube-controller-manager:v1.36.3"


@pytest.fixture(autouse=True)
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("KUBEHOIST_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / "images"


# --- Dockerfiles: parsing -------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("FROM busybox:1.36\n# a comment\nRUN echo hi\n", r"Dockerfile:3: RUN is not supported"),
        ("FROM a\nCOPY a \\\n  b \\\n  /c/\nRUN x\n", r"Dockerfile:5: RUN is not supported"),
        ("FROM a\nFROM b\n", r"Dockerfile:2: a second FROM"),
        ("COPY a b\n", r"Dockerfile:1: COPY before FROM"),
        ("FROM a\nCOPY --from=x a b\n", r"Dockerfile:2: COPY --from: not supported"),
        ("FROM a\nHEALTHCHECK NONE\n", r"Dockerfile:2: HEALTHCHECK is not supported"),
        ('FROM a\nCMD ["x"\n', r"Dockerfile:2: CMD: bad JSON array"),
        ("FROM a\nCOPY a \\\n", r"Dockerfile:2: the file ends inside a line continuation"),
        ("# nothing\n", r"Dockerfile: no FROM"),
        ("FROM a\nCOPY x\n", r"Dockerfile:2: COPY needs a source and a destination"),
        ("FROM a\nCOPY --chown=app x /y\n", r"Dockerfile:2: COPY --chown=app: .*UID\[:GID\]"),
        ("FROM a\nADD https://x/y /z\n", r"Dockerfile:2: ADD https://x/y: only files"),
        ("FROM a\nCOPY a b c\n", r"Dockerfile:2: COPY of several sources: .*must end with /"),
        ("FROM --platform=linux/arm64 a\n", r"Dockerfile:1: FROM takes no flags"),
        ("FROM a\nEXPOSE http\n", r"Dockerfile:2: EXPOSE http"),
        ("FROM a\nCMD\n", r"Dockerfile:2: CMD without a command"),
        ("FROM a\nENV A\n", r"Dockerfile:2: ENV A: no value"),
        ("FROM a\nENV 'unclosed\n", r"Dockerfile:2: ENV: cannot split"),
    ],
)
def test_dockerfile_errors_are_one_line_naming_file_and_line(text: str, message: str) -> None:
    with pytest.raises(KubehoistError, match=f"^{message}") as err:
        dockerfile.plan_dockerfile(text, "Dockerfile")
    assert "\n" not in err.value.message


def test_dockerfile_plan_follows_docker_semantics() -> None:
    plan = dockerfile.plan_dockerfile(
        "ARG V=1\n"
        "FROM registry.k8s.io/kube-controller-manager:v1.36.3 AS kcm\n"
        "LABEL org.example/a=b c=d\n"
        "ENV A=1 B='two words'\n"
        "ENV C three words\n"
        "WORKDIR /srv\n"
        "WORKDIR app\n"
        "COPY --chown=1000:2000 --chmod=0640 kubeconfig ./conf/\n"
        "ADD pki/ca.crt /etc/kubernetes/pki/\n"
        "USER 65532\n"
        "EXPOSE 10257 53/udp\n"
        "ENTRYPOINT kube-controller-manager --v=2\n"
    )
    assert plan.base == KCM
    assert plan.working_dir == "/srv/app"
    assert plan.copies == (
        dockerfile.Copy(8, "COPY", ("kubeconfig",), "/srv/app/conf/", (1000, 2000), 0o640),
        dockerfile.Copy(9, "ADD", ("pki/ca.crt",), "/etc/kubernetes/pki/", None, None),
    )
    base = ImageConfig(env=("PATH=/bin", "A=0"), cmd=("sh",), labels=(("c", "x"),))
    config = plan.config(base)
    assert config.env == ("PATH=/bin", "A=1", "B=two words", "C=three words")
    assert config.entrypoint == ("/bin/sh", "-c", "kube-controller-manager --v=2")
    assert config.cmd is None  # an ENTRYPOINT drops the base's CMD, as in Docker
    assert config.user == "65532"
    assert config.labels == (("c", "d"), ("org.example/a", "b"))
    assert config.exposed_ports == ("10257/tcp", "53/udp")
    plan2 = dockerfile.plan_dockerfile('FROM x\nCMD ["a", "b"]\n')
    assert plan2.config(base).cmd == ("a", "b") and plan2.config(base).entrypoint is None


# --- Dockerfiles: building ------------------------------------------------------------


def write_context(root: Path, files: dict[str, str], dockerfile: str) -> Path:
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    (root / "Dockerfile").write_text(dockerfile)
    return root


def test_build_from_scratch_places_files_with_owner_and_workdir(tmp_path: Path) -> None:
    ctx = write_context(
        tmp_path / "ctx",
        {"conf/a.yaml": "a: 1\n", "conf/sub/b.yaml": "b: 2\n", "run.sh": "#!/bin/sh\n"},
        "FROM scratch\n"
        "COPY --chown=1000:1001 conf /etc/app\n"
        "COPY run.sh /usr/local/bin/\n"
        "WORKDIR /var/lib/app\n"
        'CMD ["/usr/local/bin/run.sh"]\n',
    )
    (ctx / "run.sh").chmod(0o750)
    lab_root = tmp_path / "lab"
    archive = dockerfile.build_from_dockerfile(lab_root, "vip/app:v1", ctx / "Dockerfile", ctx)
    assert archive == lab_root / "images" / "docker.io_vip_app_v1.tar"
    opened = open_archive(archive)
    config, layers = opened.config, opened.layers
    assert len(layers) == 1
    assert config["config"] == {"Env": [], "Cmd": ["/usr/local/bin/run.sh"],
                                "WorkingDir": "/var/lib/app"}  # fmt: skip
    members = layer_members(layers[0])
    a = members["etc/app/a.yaml"]
    assert (a.uid, a.gid) == (1000, 1001) and layer_file(layers[0], a.name) == b"a: 1\n"
    assert (members["etc/app"].uid, members["etc/app/sub"].uid) == (1000, 1000)
    assert (members["etc"].uid, members["etc"].mode) == (0, 0o755)
    assert members["usr/local/bin/run.sh"].mode == 0o750
    assert members["var/lib/app"].isdir()
    assert "Dockerfile" not in str(list(members))
    assert images.built_images(lab_root) == {"docker.io/vip/app:v1": archive}


def test_build_on_a_built_image_adds_one_layer_following_base_symlinks(tmp_path: Path) -> None:
    base_ctx = tmp_path / "base"
    (base_ctx / "root" / "usr" / "bin").mkdir(parents=True)
    (base_ctx / "root" / "usr" / "bin" / "sh").write_text("shell")
    (base_ctx / "root" / "bin").symlink_to("usr/bin")
    (base_ctx / "root" / "tmp").mkdir()
    (base_ctx / "root" / "tmp").chmod(0o1777)
    (base_ctx / "Dockerfile").write_text('FROM scratch\nCOPY root/ /\nCMD ["sh"]\nENV A=1\n')
    lab_root = tmp_path / "lab"
    dockerfile.build_from_dockerfile(lab_root, "lab/base:1", base_ctx / "Dockerfile", base_ctx)

    ctx = write_context(
        tmp_path / "ctx",
        {"tool": "tool", "t.conf": "x"},
        'FROM lab/base:1\nCOPY tool /bin/\nCOPY t.conf /tmp/\nENTRYPOINT ["/bin/tool"]\n',
    )
    archive = dockerfile.build_from_dockerfile(lab_root, "lab/tool:1", ctx / "Dockerfile", ctx)
    opened = open_archive(archive)
    config, layers = opened.config, opened.layers
    base = read_archive(images.built_images(lab_root)["docker.io/lab/base:1"])
    assert len(layers) == 2
    assert config["rootfs"]["diff_ids"][0] == base.layers[0].diff_id
    assert config["config"] == {"Env": ["A=1"], "Entrypoint": ["/bin/tool"]}
    # through the base's /bin -> usr/bin, and no entry that would replace /bin or /tmp
    assert sorted(layer_members(layers[1])) == ["tmp/t.conf", "usr/bin/tool"]


def test_build_is_reproducible(tmp_path: Path) -> None:
    ctx = write_context(tmp_path / "ctx", {"f": "data"}, "FROM scratch\nCOPY f /f\nUSER 1\n")
    digests = {
        sha256(
            dockerfile.build_from_dockerfile(
                tmp_path / f"lab{n}", "a/b:1", ctx / "Dockerfile", ctx
            ).read_bytes()
        )
        for n in range(2)
    }
    assert len(digests) == 1


def test_build_refuses_unknown_bases_and_escapes(tmp_path: Path) -> None:
    lab_root = tmp_path / "lab"
    ctx = write_context(tmp_path / "ctx", {"f": "x"}, "FROM nginx:1.27\nCOPY f /\n")
    with pytest.raises(KubehoistError, match=r"Dockerfile: FROM nginx:1.27: not a lab image"):
        dockerfile.build_from_dockerfile(lab_root, "a/b:1", ctx / "Dockerfile", ctx)
    (tmp_path / "secret").write_text("s")
    (ctx / "Dockerfile").write_text("FROM scratch\nCOPY ../secret /\n")
    with pytest.raises(KubehoistError, match=r"Dockerfile:2: COPY \.\./secret: outside the build"):
        dockerfile.build_from_dockerfile(lab_root, "a/b:1", ctx / "Dockerfile", ctx)
    (ctx / "Dockerfile").write_text("FROM scratch\nCOPY nope /\n")
    with pytest.raises(KubehoistError, match=r"Dockerfile:2: COPY nope: no such file"):
        dockerfile.build_from_dockerfile(lab_root, "a/b:1", ctx / "Dockerfile", ctx)
    with tarfile.open(ctx / "files.tar", "w") as tar:
        tar.add(ctx / "f", "f")
    (ctx / "Dockerfile").write_text("FROM scratch\n\nADD files.tar /\n")
    with pytest.raises(KubehoistError, match=r"Dockerfile:3: ADD files.tar: a local archive"):
        dockerfile.build_from_dockerfile(lab_root, "a/b:1", ctx / "Dockerfile", ctx)
    assert images.built_images(lab_root) == {}


def test_tree_resolves_symlinks_inside_the_image() -> None:
    tree = Tree(
        dirs=frozenset({"usr", "usr/bin", "etc", "run"}),
        links={"bin": "usr/bin", "var/run": "/run", "loop": "loop"},
    )
    assert tree.resolve("/bin/x") == "usr/bin/x"
    assert tree.resolve("/var/run/a") == "run/a"
    assert tree.resolve("/etc/../bin/../../etc") == "etc"
    with pytest.raises(KubehoistError, match="too many levels"):
        tree.resolve("/loop/x")


def test_build_on_an_oci_base_with_gzip_layers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """FROM the kubehoist image (an OCI archive of gzip layers): its layers are read
    through the gzip, and kept as they are in the new archive."""
    base_layer = write_layer(
        [directory("usr/bin"), symlink("bin", "usr/bin"), file_data("usr/bin/python3", b"py")],
        tmp_path / "base.tar",
    )
    gz = gzip_layer(base_layer, tmp_path / "base.tar.gz")
    name = "ghcr.io/kubehoist/kubehoist:0.1.0"

    def make(dest: Path) -> None:
        write_oci_archive(dest, name, ImageConfig(entrypoint=("kubehoist",)), [gz])

    recipe = Recipe(name, "0" * 20, make, suffix=".oci.tar")
    monkeypatch.setattr(dockerfile, "lab_recipe", lambda n, b, v: recipe if n == name else None)
    monkeypatch.setattr(dockerfile, "locate", lambda version: None)
    ctx = write_context(tmp_path / "ctx", {"tool": "t"}, f"FROM {name}\nCOPY tool /bin/\n")
    archive = dockerfile.build_from_dockerfile(tmp_path / "lab", "a/b:1", ctx / "Dockerfile", ctx)
    opened = open_archive(archive)
    assert opened.config["rootfs"]["diff_ids"][0] == base_layer.diff_id
    assert opened.config["config"]["Entrypoint"] == ["kubehoist"]
    assert opened.layers[0] == gz.path.read_bytes()  # the gzip blob, as it was
    assert sorted(layer_members(opened.layers[1])) == ["usr/bin/tool"]  # through bin -> usr/bin
    again = read_archive(archive)
    assert again.layers[0].gzip and again.layers[0].digest == gz.digest
