"""The deployment files stay in step: docs/deploy.md shows deploy/nginx.conf verbatim, nginx
accepts it, and the Dockerfile and compose.yaml point at files that exist."""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"


def test_the_doc_shows_the_config_the_test_runs():
    """Guards drift: the nginx test runs deploy/nginx.conf, so the doc must show exactly it."""
    doc = (ROOT / "docs" / "deploy.md").read_text()
    block = re.search(r"```nginx\n(.*?)```", doc, re.S)
    assert block, "docs/deploy.md has no nginx block"
    assert block.group(1).strip() == (ROOT / "deploy" / "nginx.conf").read_text().strip()


def test_nginx_accepts_the_config(tmp_path):
    """Guards a config nginx would refuse (a typo, a directive from nginx Plus)."""
    if not Path(NGINX).exists():
        pytest.skip("needs nginx")
    main = tmp_path / "nginx.conf"
    main.write_text(f"pid {tmp_path / 'pid'};\nerror_log {tmp_path / 'err.log'};\nevents {{}}\n"
                    f"http {{ access_log off; include {ROOT / 'deploy' / 'nginx.conf'}; }}\n")
    r = subprocess.run([NGINX, "-t", "-q", "-c", str(main), "-p", str(tmp_path)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_container_files_point_at_what_exists():
    """Guards the image and compose file against renamed folders and ports that no longer
    match the nginx config."""
    for line in (ROOT / "Dockerfile").read_text().splitlines():
        if line.startswith("COPY "):
            assert (ROOT / line.split()[1]).exists(), line
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    conf = (ROOT / "deploy" / "nginx.conf").read_text()
    services = compose["services"]
    assert any("./deploy/nginx.conf:" in v for v in services["nginx"]["volumes"])
    for name in ("aura-a", "aura-b"):
        port = services[name]["environment"]["AURA_APP_PORT"]   # the health check reads it
        assert f"server 127.0.0.1:{port} " in conf and f'"127.0.0.1:{port}"' in conf
        assert "/recordings" in " ".join(services[name]["volumes"])
